//! `alert-rules/*.toml` loading: every validation error names
//! file:line:column and the expected form; valid files give rules whose
//! matchers and templates behave as documented.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use varde::check::Phase;
use varde::coordinator::rules::{
    Matcher, RuleKind, Rules, Severity, Template, load_dir, parse_files,
};
use varde::coordinator::verdict::Quorum;
use varde::probe::config::ConfigErrors;

/// Writes `files` into a fresh directory and loads it.
fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Rules, ConfigErrors>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let result = load_dir(dir.path());
    (dir, result)
}

fn ok(text: &str) -> Rules {
    let (_dir, result) = load(&[("rules.toml", text)]);
    result.unwrap_or_else(|e| panic!("expected valid rules, got:\n{e}"))
}

/// The errors, each as `file-name:line:column: message`.
fn errors_in(files: &[(&str, &str)]) -> Vec<String> {
    let (_dir, result) = load(files);
    let errs = result.expect_err("expected errors").0;
    errs.iter()
        .map(|e| {
            let shown = e.to_string();
            let full = e.file.display().to_string();
            let name = e.file.file_name().unwrap().to_string_lossy().into_owned();
            shown.replacen(&full, &name, 1)
        })
        .collect()
}

fn errors(text: &str) -> Vec<String> {
    errors_in(&[("rules.toml", text)])
}

fn one_error(text: &str) -> String {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// === valid rules ===

#[test]
fn the_repository_alert_rules_load() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("alert-rules");
    let rules = load_dir(&dir).unwrap_or_else(|e| panic!("alert-rules/ is invalid:\n{e}"));
    let kinds: Vec<&str> = rules.rules.iter().map(|r| r.kind.as_str()).collect();
    for kind in [
        "down",
        "latency",
        "cert_expiry",
        "probe_offline",
        "degraded",
    ] {
        assert!(
            kinds.contains(&kind),
            "no {kind} rule in alert-rules/: {kinds:?}"
        );
    }
}

#[test]
fn every_kind_parses_with_its_settings() {
    let rules = ok(r#"
[[rule]]
name = "api-down"
kind = "down"
quorum = "all"
for = "2m"
receiver = "oncall"

[[rule]]
name = "api-slow"
kind = "latency"
percentile = 99.9
phase = "processing"
window = "10m"
threshold = "800ms"
quorum = 2

[[rule]]
name = "cert"
kind = "cert_expiry"
threshold = "21d"

[[rule]]
name = "offline"
kind = "probe_offline"
after = "3m"

[[rule]]
name = "partial"
kind = "degraded"
"#);
    let r = &rules.rules;
    assert_eq!(r.len(), 5);
    assert_eq!(
        r[0].kind,
        RuleKind::Down {
            quorum: Quorum::All,
            for_: Duration::from_secs(120)
        }
    );
    assert_eq!(r[0].receiver, "oncall");
    assert_eq!(
        r[1].kind,
        RuleKind::Latency {
            percentile: 99.9,
            phase: Some(Phase::Processing),
            window: Duration::from_secs(600),
            threshold: Duration::from_millis(800),
            quorum: Quorum::AtLeast(2.try_into().unwrap()),
            for_: Duration::ZERO,
        }
    );
    assert_eq!(
        r[2].kind,
        RuleKind::CertExpiry {
            threshold: Duration::from_secs(21 * 86400)
        }
    );
    assert_eq!(
        r[3].kind,
        RuleKind::ProbeOffline {
            after: Duration::from_secs(180)
        }
    );
    assert_eq!(
        r[4].kind,
        RuleKind::Degraded {
            for_: Duration::ZERO
        }
    );
}

#[test]
fn omitted_settings_take_the_documented_defaults() {
    let rules = ok(r#"
[[rule]]
name = "d"
kind = "down"
[[rule]]
name = "l"
kind = "latency"
threshold = "1s"
[[rule]]
name = "c"
kind = "cert_expiry"
[[rule]]
name = "o"
kind = "probe_offline"
[[rule]]
name = "g"
kind = "degraded"
"#);
    let r = &rules.rules;
    assert_eq!(
        r[0].kind,
        RuleKind::Down {
            quorum: Quorum::Majority,
            for_: Duration::ZERO
        }
    );
    assert_eq!(
        r[1].kind,
        RuleKind::Latency {
            percentile: 95.0,
            phase: None,
            window: Duration::from_secs(300),
            threshold: Duration::from_secs(1),
            quorum: Quorum::Majority,
            for_: Duration::ZERO,
        }
    );
    assert_eq!(
        r[2].kind,
        RuleKind::CertExpiry {
            threshold: Duration::from_secs(14 * 86400)
        }
    );
    assert_eq!(
        r[3].kind,
        RuleKind::ProbeOffline {
            after: Duration::from_secs(300)
        }
    );
    let severities: Vec<Severity> = r.iter().map(|r| r.severity).collect();
    assert_eq!(
        severities,
        [
            Severity::Page,
            Severity::Ticket,
            Severity::Ticket,
            Severity::Page,
            Severity::Info
        ]
    );
    assert!(r.iter().all(|r| r.receiver == "default"));
}

#[test]
fn quorum_words_and_numbers_parse_through_the_rule() {
    for (written, want) in [
        ("\"any\"", Quorum::Any),
        ("\"majority\"", Quorum::Majority),
        ("\"all\"", Quorum::All),
        ("\"3\"", Quorum::AtLeast(3.try_into().unwrap())),
        ("3", Quorum::AtLeast(3.try_into().unwrap())),
    ] {
        let rules = ok(&format!(
            "[[rule]]\nname = \"d\"\nkind = \"down\"\nquorum = {written}\n"
        ));
        assert!(
            matches!(rules.rules[0].kind, RuleKind::Down { quorum, .. } if quorum == want),
            "{written}"
        );
    }
}

// === matchers ===

#[test]
fn matchers_compare_exact_regex_and_negated() {
    let rules = ok(r#"
[[rule]]
name = "m"
kind = "down"
match = { team = "web", service = "~api-.*", env = "!staging", check = "!~.*-canary" }
"#);
    let rule = &rules.rules[0];
    let base = [
        ("team", "web"),
        ("service", "api-eu"),
        ("env", "prod"),
        ("check", "api-health"),
    ];
    assert!(rule.matches(&labels(&base)));

    let with = |k: &str, v: &str| {
        let mut l = labels(&base);
        l.insert(k.to_owned(), v.to_owned());
        rule.matches(&l)
    };
    assert!(!with("team", "db"), "exact");
    assert!(
        !with("service", "web-api-eu"),
        "regex is anchored at the start"
    );
    assert!(!with("service", "xapi-"), "regex is anchored");
    assert!(!with("env", "staging"), "negated exact");
    assert!(!with("check", "api-canary"), "negated regex");
    assert!(with("check", "api-canary-2"), "negated regex is anchored");
}

#[test]
fn a_missing_label_compares_as_empty() {
    let m = Matcher::parse("env", "!staging").unwrap();
    assert!(m.matches(&labels(&[])));
    let m = Matcher::parse("env", "prod").unwrap();
    assert!(!m.matches(&labels(&[])));
    let m = Matcher::parse("env", "~.*").unwrap();
    assert!(m.matches(&labels(&[])));
    let m = Matcher::parse("env", "!~.+").unwrap();
    assert!(m.matches(&labels(&[])));
}

#[test]
fn a_backslash_makes_a_leading_operator_literal() {
    let m = Matcher::parse("tag", "\\!important").unwrap();
    assert!(m.matches(&labels(&[("tag", "!important")])));
    let m = Matcher::parse("tag", "\\~x").unwrap();
    assert!(m.matches(&labels(&[("tag", "~x")])));
    assert!(!m.matches(&labels(&[("tag", "x")])));
}

// === templates ===

#[test]
fn templates_render_fields_and_labels() {
    let rules = ok(r#"
[[rule]]
name = "api-down"
kind = "down"
[rule.annotations]
summary = "{{ check }} down in {{down_regions}}/{{ regions }} regions ({{ labels.team }})"
runbook = "https://runbooks.example.com/{{ check }}"
"#);
    let values = |f: &str| match f {
        "check" => Some("api-health".to_owned()),
        "down_regions" => Some("2".to_owned()),
        "regions" => Some("3".to_owned()),
        "labels.team" => Some("web".to_owned()),
        _ => None,
    };
    let a = &rules.rules[0].annotations;
    assert_eq!(
        a["summary"].render(&values),
        "api-health down in 2/3 regions (web)"
    );
    assert_eq!(
        a["runbook"].render(&values),
        "https://runbooks.example.com/api-health"
    );
}

#[test]
fn a_field_without_a_value_renders_empty() {
    let t = Template::parse("[{{ reason }}] {{ check }}").unwrap();
    assert_eq!(
        t.render(&|f| (f == "check").then(|| "c".to_owned())),
        "[] c"
    );
    assert_eq!(t.fields().collect::<Vec<_>>(), ["reason", "check"]);
}

// === errors ===

#[test]
fn invalid_toml_is_reported_at_its_position() {
    let e = one_error("[[rule]]\nname = \"x\"\nkind = \n");
    assert!(e.starts_with("rules.toml:3:"), "{e}");
    assert!(e.contains("invalid TOML"), "{e}");
}

#[test]
fn unknown_top_level_and_rule_keys_are_errors() {
    let errs = errors(
        r#"[[rules]]
name = "a"

[[rule]]
name = "b"
kind = "down"
severty = "page"
"#,
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules.toml:1:3: unknown field `rules`, expected one of `rule`"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules.toml:7:1: unknown field `severty`, expected one of `name`"),
        "{}",
        errs[1]
    );
}

#[test]
fn a_key_of_another_kind_is_an_error() {
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"down\"\npercentile = 99\n");
    assert_eq!(
        e,
        "rules.toml:4:1: `percentile` does not apply to a down rule \
         (a down rule takes `quorum`, `for` besides the common keys)"
    );
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"cert_expiry\"\nafter = \"5m\"\n");
    assert!(
        e.starts_with("rules.toml:4:1: `after` does not apply to a cert_expiry rule"),
        "{e}"
    );
}

#[test]
fn missing_name_and_kind_point_at_the_rule_header() {
    let errs = errors("[[rule]]\nseverity = \"page\"\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    // Same position: ordered by message.
    assert!(
        errs[0].starts_with("rules.toml:1:1: rule: missing `kind` (expected one of down, latency"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[1], "rules.toml:1:1: rule: missing `name`");
}

#[test]
fn unknown_kind_severity_and_empty_receiver_are_errors() {
    let errs = errors(
        "[[rule]]\nname = \"a\"\nkind = \"up\"\n\n[[rule]]\nname = \"b\"\nkind = \"down\"\nseverity = \"urgent\"\nreceiver = \"\"\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules.toml:3:8: kind: unknown kind \"up\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with(
            "rules.toml:8:12: severity: unknown severity \"urgent\": expected \"page\""
        ),
        "{}",
        errs[1]
    );
    assert_eq!(errs[2], "rules.toml:9:12: receiver: must not be empty");
}

#[test]
fn a_latency_rule_needs_a_threshold() {
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"latency\"\n");
    assert!(
        e.starts_with("rules.toml:1:1: rule: a latency rule needs `threshold`"),
        "{e}"
    );
}

#[test]
fn bad_durations_name_the_key_and_the_expected_form() {
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"down\"\nfor = \"2 mins-ish\"\n");
    assert!(
        e.starts_with("rules.toml:4:7: for: invalid duration \"2 mins-ish\""),
        "{e}"
    );
    assert!(e.contains("expected e.g. \"30s\""), "{e}");
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"probe_offline\"\nafter = 300\n");
    assert_eq!(
        e,
        "rules.toml:4:9: after: expected a string, found an integer"
    );
}

#[test]
fn bad_quorums_are_errors() {
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"down\"\nquorum = \"most\"\n");
    assert!(
        e.starts_with("rules.toml:4:10: quorum: unknown quorum \"most\""),
        "{e}"
    );
    let e = one_error("[[rule]]\nname = \"a\"\nkind = \"down\"\nquorum = 0\n");
    assert!(
        e.starts_with("rules.toml:4:10: quorum: quorum \"0\""),
        "{e}"
    );
}

#[test]
fn invalid_matchers_are_errors() {
    let errs = errors(
        "[[rule]]\nname = \"a\"\nkind = \"down\"\nmatch = { service = \"~api-(\", \"bad-name\" = \"x\", team = 1 }\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules.toml:4:21: match.service: invalid regex \"api-(\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules.toml:4:31: match: \"bad-name\" is not a valid label name"),
        "{}",
        errs[1]
    );
    assert_eq!(
        errs[2],
        "rules.toml:4:56: match.team: expected a string, found an integer"
    );
}

#[test]
fn percentile_out_of_range_and_unknown_phase_are_errors() {
    let errs = errors(
        "[[rule]]\nname = \"a\"\nkind = \"latency\"\nthreshold = \"1s\"\npercentile = 0\nphase = \"dns\"\n\n[[rule]]\nname = \"b\"\nkind = \"latency\"\nthreshold = \"1s\"\npercentile = 100.5\n",
    );
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules.toml:5:14: percentile: 0 is out of range"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules.toml:6:9: phase: unknown phase \"dns\", expected one of total"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("rules.toml:12:14: percentile: 100.5 is out of range"),
        "{}",
        errs[2]
    );
}

#[test]
fn a_duplicate_name_points_at_the_second_and_names_the_first() {
    let errs = errors_in(&[
        ("a.toml", "[[rule]]\nname = \"api-down\"\nkind = \"down\"\n"),
        (
            "b.toml",
            "\n[[rule]]\nkind = \"down\"\nname = \"api-down\"\n",
        ),
    ]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .starts_with("b.toml:4:8: name: duplicate rule name \"api-down\" (first defined at "),
        "{}",
        errs[0]
    );
    assert!(errs[0].ends_with("a.toml:2)"), "{}", errs[0]);
}

#[test]
fn templates_naming_unknown_fields_are_errors() {
    let errs = errors(
        "[[rule]]\nname = \"a\"\nkind = \"down\"\n[rule.annotations]\nsummary = \"{{ check }} is down in {{ regoins }}\"\nrunbook = \"{{ check \"\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("rules.toml:5:35: annotations.summary: unknown template field \"regoins\": expected one of rule, kind"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with("rules.toml:6:12: annotations.runbook: unclosed `{{`"),
        "{}",
        errs[1]
    );
}

#[test]
fn every_error_across_files_is_reported_in_order() {
    let errs = errors_in(&[
        (
            "a.toml",
            "[[rule]]\nname = \"a\"\nkind = \"down\"\nfor = \"soon\"\nquorum = \"most\"\n",
        ),
        (
            "b.toml",
            "[[rule]]\nname = \"b\"\nkind = \"cert_expiry\"\nthreshold = \"x\"\n",
        ),
        ("c.toml", "[[rule]\n"),
    ]);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("a.toml:4:7: for:"), "{}", errs[0]);
    assert!(errs[1].starts_with("a.toml:5:10: quorum:"), "{}", errs[1]);
    assert!(
        errs[2].starts_with("b.toml:4:13: threshold:"),
        "{}",
        errs[2]
    );
    assert!(errs[3].starts_with("c.toml:1:"), "{}", errs[3]);
}

#[test]
fn parse_files_takes_contents_without_a_directory() {
    let rules = parse_files(&[(
        "mem.toml".into(),
        "[[rule]]\nname = \"a\"\nkind = \"degraded\"\n".to_owned(),
    )])
    .unwrap();
    assert_eq!(rules.rules[0].name, "a");
    assert_eq!(rules.files, [Path::new("mem.toml")]);
}

#[test]
fn a_single_rule_table_asks_for_the_array_header() {
    let e = one_error("[rule]\nname = \"a\"\nkind = \"down\"\n");
    assert!(
        e.starts_with("rules.toml:1:1: rule: expected an array of tables: write each rule under its own [[rule]] header"),
        "{e}"
    );
}

#[test]
fn a_rule_with_errors_still_claims_its_name() {
    // The second rule is reported as a duplicate even though the first is
    // itself invalid, so fixing one error does not reveal another.
    let errs = errors(
        "[[rule]]\nname = \"a\"\nkind = \"down\"\nfor = \"x\"\n\n[[rule]]\nname = \"a\"\nkind = \"degraded\"\n",
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[1].starts_with("rules.toml:7:8: name: duplicate rule name \"a\" (first defined at "),
        "{}",
        errs[1]
    );
    assert!(errs[1].ends_with("rules.toml:2)"), "{}", errs[1]);
}

#[test]
fn a_negation_can_compare_with_a_literal_tilde() {
    let m = Matcher::parse("tag", "!\\~x").unwrap();
    assert!(!m.matches(&labels(&[("tag", "~x")])));
    assert!(m.matches(&labels(&[("tag", "x")])));
}
