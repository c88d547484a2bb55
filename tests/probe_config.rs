//! `probes/*.toml` loading: every validation error names file:line:column
//! and the expected form; valid files give the checks and modules the
//! probe runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use varde::check::CheckSpec;
use varde::check::dns::DnsTransport;
use varde::probe::config::{ConfigErrors, ProbeConfig, load_dir, parse_files};

/// Writes `files` into a fresh directory and loads it.
fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<ProbeConfig, ConfigErrors>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let result = load_dir(dir.path());
    (dir, result)
}

fn ok(files: &[(&str, &str)]) -> ProbeConfig {
    let (_dir, result) = load(files);
    result.unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}"))
}

/// The errors, each as `file-name:line:column: message`.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
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

/// Asserts exactly one error, starting with `at` and containing each of `says`.
fn assert_one(files: &[(&str, &str)], at: &str, says: &[&str]) {
    let errs = errors(files);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with(at), "expected at {at}: {}", errs[0]);
    for s in says {
        assert!(errs[0].contains(s), "expected {s:?} in: {}", errs[0]);
    }
}

// === syntax and unknown fields ===

#[test]
fn toml_syntax_error_names_line_and_column() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ninterval = 30s\n";
    assert_one(&[("web.toml", text)], "web.toml:4:12: ", &["invalid TOML"]);
}

#[test]
fn unknown_top_level_key_lists_the_expected_ones() {
    let text = "[[checks]]\nname = \"a\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:1:3: ",
        &["unknown field `checks`", "`defaults`, `check`, `modules`"],
    );
}

#[test]
fn unknown_check_option_names_the_kind_and_its_options() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nvalid_statuses = [\"200\"]\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:1: ",
        &[
            "unknown field `valid_statuses`",
            "for a http check",
            "`valid_status`",
        ],
    );
}

#[test]
fn unknown_nested_tls_field_points_at_the_key() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"https://a/\"\ntls = { ca_flie = \"ca.pem\" }\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:9: ",
        &[
            "tls: unknown field `ca_flie`",
            "expected one of",
            "`ca_file`",
        ],
    );
}

#[test]
fn unknown_field_in_a_sub_table_header_points_at_the_key() {
    let text =
        "[[check]]\nname = \"a\"\ntarget = \"https://a/\"\n[check.net]\nip_prefernce = \"ip4\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:5:1: ",
        &["net: unknown field `ip_prefernce`", "`ip_preference`"],
    );
}

#[test]
fn unknown_defaults_key_is_an_error() {
    let text = "[defaults]\nintervall = \"30s\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:2:1: ",
        &["unknown field `intervall`", "`interval`"],
    );
}

#[test]
fn option_of_the_wrong_type_says_what_was_expected() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nmax_redirects = \"five\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:17: ",
        &["max_redirects: invalid type: string \"five\", expected u32"],
    );
}

#[test]
fn options_the_target_sets_are_rejected_with_the_target_form() {
    let text =
        "[[check]]\nname = \"a\"\ntarget = \"dns://1.1.1.1/example.com\"\nquery_type = \"MX\"\n";
    assert_one(
        &[("dns.toml", text)],
        "dns.toml:4:1: ",
        &["`query_type` is set by the target", "?type=MX"],
    );
}

#[test]
fn tls_options_on_a_plain_tcp_target_ask_for_tls_scheme() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"tcp://a:25\"\ntls = {}\n";
    assert_one(
        &[("tcp.toml", text)],
        "tcp.toml:4:1: ",
        &["needs a tls:// target"],
    );
}

// === required fields, targets, durations ===

#[test]
fn missing_name_and_target_point_at_the_check_header() {
    let text = "[defaults]\ninterval = \"1m\"\n\n[[check]]\ninterval = \"30s\"\n";
    let errs = errors(&[("web.toml", text)]);
    assert_eq!(
        errs,
        vec![
            "web.toml:4:1: missing field `name`".to_owned(),
            "web.toml:4:1: missing field `target` (a URL: http://, https://, dns://, tcp:// or tls://)"
                .to_owned(),
        ]
    );
}

#[test]
fn bad_target_url_reports_what_was_expected_at_the_value() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"ftp://a/\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:3:10: ",
        &["target: unsupported scheme \"ftp\"", "http://, https://"],
    );
}

#[test]
fn bad_duration_says_the_expected_form() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ninterval = \"30\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:12: ",
        &[
            "interval: invalid duration \"30\"",
            "expected e.g. \"30s\", \"5m\"",
        ],
    );
}

#[test]
fn timeout_not_shorter_than_interval_points_at_the_timeout() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ninterval = \"10s\"\n\n\ntimeout = \"10s\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:7:11: ",
        &["timeout: 10s must be shorter than the interval (10s)"],
    );
}

#[test]
fn timeout_from_defaults_too_long_for_a_check_names_the_check() {
    let text = "[defaults]\ntimeout = \"20s\"\n\n[[check]]\nname = \"fast\"\ntarget = \"http://a/\"\ninterval = \"15s\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:2:11: ",
        &["20s must be shorter than the interval (15s) of check \"fast\""],
    );
}

#[test]
fn zero_interval_is_rejected_at_the_interval() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ninterval = \"0s\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:12: ",
        &["interval: must be greater than zero"],
    );
}

#[test]
fn default_timeout_fits_a_short_interval() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ninterval = \"5s\"\n[[check]]\nname = \"b\"\ntarget = \"http://b/\"\n";
    let c = ok(&[("web.toml", text)]);
    assert_eq!(c.checks[0].interval, Duration::from_secs(5));
    assert_eq!(c.checks[0].timeout, Duration::from_secs(4));
    assert_eq!(c.checks[1].interval, Duration::from_secs(60));
    assert_eq!(c.checks[1].timeout, Duration::from_secs(10));
}

// === names and dependencies ===

#[test]
fn duplicate_check_name_points_at_the_second_and_says_where_the_first_is() {
    let a = "[[check]]\nname = \"api\"\ntarget = \"http://a/\"\n";
    let b = "# b\n[[check]]\nname = \"api\"\ntarget = \"http://b/\"\n";
    let (dir, result) = load(&[("a.toml", a), ("b.toml", b)]);
    let errs = result.unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].file, dir.path().join("b.toml"));
    assert_eq!((errs[0].line, errs[0].column), (3, 8));
    let first = format!("{}:2", dir.path().join("a.toml").display());
    assert_eq!(
        errs[0].message,
        format!("duplicate check name \"api\" (first defined at {first})")
    );
}

#[test]
fn depends_on_an_unknown_check_points_at_the_entry() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ndepends_on = [\"edge-dns\", \"nope\"]\n[[check]]\nname = \"edge-dns\"\ntarget = \"dns://10.0.0.53/example.com\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:27: ",
        &["depends_on: no check is named \"nope\""],
    );
}

#[test]
fn depends_on_itself_is_an_error() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ndepends_on = [\"a\"]\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:15: ",
        &["check \"a\" depends on itself"],
    );
}

#[test]
fn dependency_cycle_across_files_is_reported_once() {
    let a = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ndepends_on = [\"b\"]\n";
    let b = "[[check]]\nname = \"b\"\ntarget = \"http://b/\"\ndepends_on = [\"c\"]\n[[check]]\nname = \"c\"\ntarget = \"http://c/\"\ndepends_on = [\"a\"]\n";
    assert_one(
        &[("a.toml", a), ("b.toml", b)],
        "b.toml:8:15: ",
        &["dependency cycle: a → b → c → a"],
    );
}

#[test]
fn depends_on_is_not_judged_when_another_file_does_not_parse() {
    // The check it names may be in the broken file: one error, not two.
    let a = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\ndepends_on = [\"b\"]\n";
    let b = "[[check]\n";
    let errs = errors(&[("a.toml", a), ("b.toml", b)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("b.toml:1:"), "{}", errs[0]);
}

// === options checked by CheckSpec::build ===

#[test]
fn invalid_regex_is_reported_at_the_offending_item() {
    let text =
        "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nbody_regex = [\"ok\", \"(unclosed\"]\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:21: ",
        &["body_regex: invalid regex \"(unclosed\""],
    );
}

#[test]
fn missing_tls_ca_file_is_reported_at_the_option() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"https://a/\"\n\n[check.tls]\nca_file = \"nowhere.pem\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:6:11: ",
        &["tls.ca_file:", "nowhere.pem"],
    );
}

#[test]
fn invalid_header_is_reported_at_the_headers_table() {
    let text =
        "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nheaders = { \"bad header\" = \"x\" }\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:11: ",
        &["headers: invalid header name \"bad header\""],
    );
}

#[test]
fn dns_query_type_from_the_target_is_validated_at_the_target() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"dns://1.1.1.1/example.com?type=BOGUS\"\n";
    assert_one(
        &[("dns.toml", text)],
        "dns.toml:3:10: ",
        &["query_type: unsupported query type \"BOGUS\""],
    );
}

#[test]
fn relative_ca_file_resolves_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("conf");
    std::fs::create_dir_all(sub.join("certs")).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(sub.join("certs/ca.pem"), cert.cert.pem()).unwrap();
    let text = "[[check]]\nname = \"a\"\ntarget = \"https://localhost/\"\ntls = { ca_file = \"certs/ca.pem\" }\n";
    std::fs::write(sub.join("web.toml"), text).unwrap();
    let config = load_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
    let CheckSpec::Http(o) = &config.checks[0].spec else {
        panic!("not http")
    };
    assert_eq!(
        o.tls.ca_file.as_deref(),
        Some(sub.join("certs/ca.pem").as_path())
    );
    // The same file elsewhere does not find it: relative to the file, not the cwd.
    let elsewhere = dir.path().join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("web.toml"), text).unwrap();
    let err = load_dir(&elsewhere).unwrap_err();
    assert!(err.to_string().contains("tls.ca_file"), "{err}");
}

// === labels ===

#[test]
fn label_names_must_be_prometheus_names() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nlabels = { ok = \"1\", \"bad-name\" = \"x\" }\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:22: ",
        &[
            "labels: \"bad-name\" is not a valid label name",
            "[a-zA-Z_][a-zA-Z0-9_]*",
        ],
    );
}

#[test]
fn label_names_starting_with_double_underscore_are_reserved() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nlabels = { __meta = \"x\" }\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:12: ",
        &["\"__meta\"", "reserved"],
    );
}

#[test]
fn labels_varde_sets_itself_are_reserved() {
    for name in ["check", "target", "region", "phase", "reason", "result"] {
        let text = format!("[defaults]\nlabels = {{ {name} = \"x\" }}\n");
        assert_one(
            &[("web.toml", &text)],
            "web.toml:2:12: ",
            &[&format!("\"{name}\" is reserved")],
        );
    }
}

#[test]
fn label_values_must_be_strings() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\nlabels = { tier = 1 }\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:4:19: ",
        &["labels.tier: expected a string, found an integer"],
    );
}

// === all errors at once ===

#[test]
fn every_error_in_every_file_is_reported_in_order() {
    let web = r#"[defaults]
interval = "thirty"

[[check]]
name = "a"
target = "https://a/"
method = "GET"
tls = { ca_flie = "x" }
max_redirects = -1
body_regex = ["("]
labels = { "region" = "eu" }

[[check]]
target = "gopher://b/"
"#;
    let dns = "[[check]]\nname = \"a\"\ntarget = \"dns://1.1.1.1/example.com\"\nfoo = 1\n";
    let errs = errors(&[("web.toml", web), ("dns.toml", dns)]);
    let at: Vec<&str> = errs.iter().map(|e| e.split(' ').next().unwrap()).collect();
    assert_eq!(
        at,
        vec![
            "dns.toml:4:1:",   // unknown field foo
            "web.toml:2:12:",  // bad duration
            "web.toml:5:8:",   // duplicate name (dns.toml is read first)
            "web.toml:8:9:",   // tls.ca_flie
            "web.toml:9:17:",  // max_redirects negative
            "web.toml:10:15:", // bad regex
            "web.toml:11:12:", // reserved label
            "web.toml:13:1:",  // missing name
            "web.toml:14:10:", // bad scheme
        ],
        "{errs:#?}"
    );
}

// === valid files ===

#[test]
fn defaults_merge_into_checks_and_the_check_wins() {
    let text = r#"
[defaults]
interval = "30s"
timeout = "10s"
labels = { team = "web", tier = "1" }
regions = ["eu", "us"]
tls = { expiry_threshold = "14d", insecure = true }
net = { ip_preference = "ip4" }

[[check]]
name = "a"
target = "https://a.example/"
labels = { tier = "2", service = "api" }
tls = { insecure = false }

[[check]]
name = "b"
target = "tls://b.example:443"
interval = "15s"
timeout = "5s"
regions = ["ap"]

[[check]]
name = "c"
target = "tcp://c.example:25"
net = { ip_fallback = false }
"#;
    let c = ok(&[("web.toml", text)]);
    let [a, b, cc] = &c.checks[..] else {
        panic!("{:?}", c.checks)
    };
    assert_eq!(a.interval, Duration::from_secs(30));
    assert_eq!(a.timeout, Duration::from_secs(10));
    assert_eq!(
        a.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        vec![("service", "api"), ("team", "web"), ("tier", "2")]
    );
    assert_eq!(a.regions, vec!["eu", "us"]);
    let CheckSpec::Http(ao) = &a.spec else {
        panic!()
    };
    assert_eq!(
        ao.tls.expiry_threshold,
        Some(Duration::from_secs(14 * 86400))
    );
    assert!(!ao.tls.insecure, "the check's own tls key wins");
    assert_eq!(ao.net.ip_preference, varde::check::IpPreference::Ip4);

    assert_eq!(
        (b.interval, b.timeout),
        (Duration::from_secs(15), Duration::from_secs(5))
    );
    assert_eq!(b.regions, vec!["ap"]);
    let CheckSpec::Tcp(bo) = &b.spec else {
        panic!()
    };
    let tls = bo.tls.as_ref().expect("tls:// speaks TLS");
    assert_eq!(tls.expiry_threshold, Some(Duration::from_secs(14 * 86400)));

    let CheckSpec::Tcp(co) = &cc.spec else {
        panic!()
    };
    assert!(co.tls.is_none(), "tcp:// gets no TLS defaults");
    assert_eq!(co.net.ip_preference, varde::check::IpPreference::Ip4);
    assert!(!co.net.ip_fallback);
}

#[test]
fn defaults_apply_only_to_their_own_file() {
    let a = "[defaults]\ninterval = \"30s\"\nlabels = { team = \"a\" }\n";
    let b = "[[check]]\nname = \"b\"\ntarget = \"http://b/\"\n";
    let c = ok(&[("a.toml", a), ("b.toml", b)]);
    assert_eq!(c.checks[0].interval, Duration::from_secs(60));
    assert!(c.checks[0].labels.is_empty());
}

#[test]
fn kind_is_inferred_from_each_target_scheme() {
    let text = r#"
[[check]]
name = "http"
target = "http://a.example/x"
[[check]]
name = "https"
target = "https://a.example/"
[[check]]
name = "dns"
target = "dns://10.0.0.53/example.com?type=mx&transport=tcp"
answer_contains = ["mail"]
[[check]]
name = "tcp"
target = "tcp://a.example:25"
expect = "^220"
[[check]]
name = "tls"
target = "tls://a.example:465"
"#;
    let c = ok(&[("all.toml", text)]);
    let specs: Vec<&CheckSpec> = c.checks.iter().map(|c| &c.spec).collect();
    match specs[..] {
        [
            CheckSpec::Http(h),
            CheckSpec::Http(hs),
            CheckSpec::Dns(d),
            CheckSpec::Tcp(t),
            CheckSpec::Tcp(ts),
        ] => {
            assert_eq!(h.url, "http://a.example/x");
            assert_eq!(hs.url, "https://a.example/");
            assert_eq!(
                (d.server.as_str(), d.name.as_str()),
                ("10.0.0.53", "example.com")
            );
            assert_eq!(d.query_type, "MX");
            assert_eq!(d.transport, DnsTransport::Tcp);
            assert_eq!(d.answer_contains, vec!["mail"]);
            assert_eq!(t.address, "a.example:25");
            assert!(t.tls.is_none());
            assert_eq!(t.expect.as_deref(), Some("^220"));
            assert_eq!(ts.address, "a.example:465");
            assert!(ts.tls.is_some());
        }
        _ => panic!("{specs:?}"),
    }
    assert_eq!(
        c.checks[2].target,
        "dns://10.0.0.53/example.com?type=mx&transport=tcp"
    );
    assert!(c.checks.iter().all(|d| d.build().is_ok()));
}

#[test]
fn parse_files_works_from_memory_and_keeps_file_order() {
    let files = vec![
        (
            PathBuf::from("z.toml"),
            "[[check]]\nname = \"z\"\ntarget = \"http://z/\"\n".to_owned(),
        ),
        (
            PathBuf::from("a.toml"),
            "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\n".to_owned(),
        ),
    ];
    let c = parse_files(&files).unwrap();
    assert_eq!(
        c.files,
        vec![PathBuf::from("z.toml"), PathBuf::from("a.toml")]
    );
    assert_eq!(
        c.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["z", "a"]
    );
}

#[test]
fn load_dir_reads_only_toml_files_in_name_order() {
    let c = ok(&[
        (
            "b.toml",
            "[[check]]\nname = \"b\"\ntarget = \"http://b/\"\n",
        ),
        (
            "a.toml",
            "[[check]]\nname = \"a\"\ntarget = \"http://a/\"\n",
        ),
        ("notes.txt", "not toml at all ["),
    ]);
    assert_eq!(
        c.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(c.files.len(), 2);
}

#[test]
fn missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = load_dir(&missing).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].file, missing);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read the directory", missing.display())),
        "{err}"
    );
}

// === modules ===

const MODULES: &str = r#"
[modules.http_2xx]
kind = "http"
timeout = "5s"
valid_status = ["2xx"]

[modules.tcp_tls]
kind = "tcp"
tls = true

[modules.tcp_connect]
kind = "tcp"

[modules.dns_a]
kind = "dns"
query_name = "example.com"
transport = "tcp"
"#;

#[test]
fn module_spec_for_fills_in_each_kind_of_target() {
    let c = ok(&[("modules.toml", MODULES)]);
    let http = &c.modules["http_2xx"];
    assert_eq!(http.timeout, Duration::from_secs(5));
    let CheckSpec::Http(h) = http.spec_for("https://example.com/x").unwrap() else {
        panic!()
    };
    assert_eq!(h.url, "https://example.com/x");
    assert_eq!(h.valid_status, vec!["2xx"]);

    let CheckSpec::Tcp(t) = c.modules["tcp_tls"].spec_for("example.com:443").unwrap() else {
        panic!()
    };
    assert_eq!(t.address, "example.com:443");
    assert!(t.tls.is_some());
    let CheckSpec::Tcp(t) = c.modules["tcp_connect"].spec_for("[::1]:22").unwrap() else {
        panic!()
    };
    assert!(t.tls.is_none());
    assert_eq!(c.modules["tcp_connect"].timeout, Duration::from_secs(10));

    let dns = &c.modules["dns_a"];
    let CheckSpec::Dns(d) = dns.spec_for("1.1.1.1/example.org").unwrap() else {
        panic!()
    };
    assert_eq!(
        (d.server.as_str(), d.name.as_str()),
        ("1.1.1.1", "example.org")
    );
    assert_eq!(
        (d.query_type.as_str(), d.transport),
        ("A", DnsTransport::Tcp)
    );
    // A server alone asks the module's query_name; ?type= overrides the module.
    let CheckSpec::Dns(d) = dns.spec_for("1.1.1.1").unwrap() else {
        panic!()
    };
    assert_eq!(d.name, "example.com");
    let CheckSpec::Dns(d) = dns.spec_for("dns://1.1.1.1/example.org?type=MX").unwrap() else {
        panic!()
    };
    assert_eq!(d.query_type, "MX");
}

#[test]
fn module_spec_for_rejects_targets_of_another_kind() {
    let c = ok(&[("modules.toml", MODULES)]);
    let e = c.modules["http_2xx"]
        .spec_for("example.com:443")
        .unwrap_err();
    assert!(e.contains("needs a scheme"), "{e}");
    let e = c.modules["http_2xx"]
        .spec_for("tcp://example.com:443")
        .unwrap_err();
    assert!(e.contains("expected an http:// or https:// URL"), "{e}");
    let e = c.modules["tcp_connect"]
        .spec_for("example.com")
        .unwrap_err();
    assert!(e.contains("host:port"), "{e}");
    let e = c.modules["dns_a"]
        .spec_for("1.1.1.1/bad name!")
        .unwrap_err();
    assert!(!e.is_empty());
}

#[test]
fn dns_module_without_query_name_needs_server_and_name() {
    let c = ok(&[(
        "m.toml",
        "[modules.dns_mx]\nkind = \"dns\"\nquery_type = \"MX\"\n",
    )]);
    let e = c.modules["dns_mx"].spec_for("1.1.1.1").unwrap_err();
    assert!(e.contains("expects SERVER/NAME"), "{e}");
    let CheckSpec::Dns(d) = c.modules["dns_mx"].spec_for("1.1.1.1/gmail.com").unwrap() else {
        panic!()
    };
    assert_eq!(d.query_type, "MX");
}

#[test]
fn duplicate_module_names_across_files_point_at_the_second() {
    let a = "[modules.http_2xx]\nkind = \"http\"\n";
    let b = "\n[modules.http_2xx]\nkind = \"http\"\n";
    let errs = errors(&[("a.toml", a), ("b.toml", b)]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("b.toml:2:10: duplicate module name \"http_2xx\" (first defined at "),
        "{}",
        errs[0]
    );
    assert!(errs[0].ends_with("a.toml:1)"), "{}", errs[0]);
}

#[test]
fn invalid_module_options_are_reported_at_load() {
    let text = r#"[modules.bad]
kind = "http"
body_regex = ["("]
[modules.worse]
kind = "smtp"
[modules.typo]
kind = "tcp"
expekt = "^220"
[modules.nokind]
timeout = "5s"
"#;
    let errs = errors(&[("m.toml", text)]);
    assert_eq!(
        errs.iter()
            .map(|e| e.split(": ").next().unwrap())
            .collect::<Vec<_>>(),
        ["m.toml:3:15", "m.toml:5:8", "m.toml:8:1", "m.toml:9:1"],
        "{errs:#?}"
    );
    assert!(errs[0].contains("body_regex: invalid regex"), "{}", errs[0]);
    assert!(
        errs[1].contains("kind: expected \"http\", \"dns\" or \"tcp\", found \"smtp\""),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains("unknown field `expekt`") && errs[2].contains("`expect`"),
        "{}",
        errs[2]
    );
    assert!(errs[3].contains("missing field `kind`"), "{}", errs[3]);
}

// === the repository's own probes/ ===

#[test]
fn repository_probes_directory_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes");
    let c = load_dir(&dir).unwrap_or_else(|e| panic!("probes/ must load:\n{e}"));
    assert!(c.files.len() >= 3, "{:?}", c.files);
    // What `varde up` runs offline: varde's own endpoints and the demo
    // target, all local, in every region; nothing that needs the internet.
    assert!(!c.checks.is_empty());
    assert!(
        c.checks
            .iter()
            .all(|d| d.regions.is_empty() && d.target.contains("127.0.0.1")),
        "{:?}",
        c.checks
    );
    for kind in ["http", "tcp"] {
        assert!(
            c.checks.iter().any(|d| d.kind().as_str() == kind),
            "no local {kind} check"
        );
    }
    // probes/examples/ (not loaded with probes/) documents every kind.
    let ex = load_dir(&dir.join("examples"))
        .unwrap_or_else(|e| panic!("probes/examples/ must load:\n{e}"));
    for kind in ["http", "dns", "tcp"] {
        assert!(
            ex.checks.iter().any(|d| d.kind().as_str() == kind),
            "no {kind} example"
        );
    }
    assert!(ex.checks.iter().any(|d| d.target.starts_with("https://")));
    assert!(ex.checks.iter().any(|d| d.target.starts_with("tls://")));
    for m in ["http_2xx", "https_2xx", "tcp_connect", "dns_a"] {
        assert!(c.modules.contains_key(m), "module {m} missing");
    }
    assert!(c.modules["tcp_connect"].spec_for("127.0.0.1:9490").is_ok());
    assert!(
        c.modules["http_2xx"]
            .spec_for("http://127.0.0.1:9490/healthz")
            .is_ok()
    );
    assert!(c.modules["dns_a"].spec_for("127.0.0.1").is_ok());
}

#[test]
fn errors_display_one_per_line_with_positions() {
    let text = "[[check]]\nname = \"a\"\ntarget = \"x\"\n[[check]]\nname = \"b\"\ntarget = \"y\"\n";
    let files = vec![(PathBuf::from("dir/web.toml"), text.to_owned())];
    let err = parse_files(&files).unwrap_err();
    let shown = err.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2, "{shown}");
    assert!(
        lines[0].starts_with("dir/web.toml:3:10: target: "),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("dir/web.toml:6:10: target: "),
        "{shown}"
    );
    let _: &dyn std::error::Error = &err;
}

#[test]
fn a_single_check_table_asks_for_double_brackets() {
    let text = "[check]\nname = \"a\"\ntarget = \"http://a/\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:1:1: ",
        &["expected an array of tables", "[[check]]"],
    );
}

#[test]
fn an_error_in_defaults_is_reported_once_not_per_check() {
    let text = "[defaults]\ntls = { expiry_treshold = \"14d\" }\n[[check]]\nname = \"a\"\ntarget = \"https://a/\"\n[[check]]\nname = \"b\"\ntarget = \"https://b/\"\n";
    assert_one(
        &[("web.toml", text)],
        "web.toml:2:9: ",
        &["tls: unknown field `expiry_treshold`", "`expiry_threshold`"],
    );
}

#[test]
fn explicit_kind_reads_a_target_without_a_scheme() {
    let text = r#"
[[check]]
name = "smtp"
kind = "tcp"
target = "mail.example:25"
[[check]]
name = "imaps"
kind = "tls"
target = "mail.example:993"
[[check]]
name = "dns"
kind = "dns"
target = "10.0.0.53/example.com"
[[check]]
name = "web"
kind = "http"
target = "https://a.example/"
"#;
    let c = ok(&[("k.toml", text)]);
    match c.checks.iter().map(|c| &c.spec).collect::<Vec<_>>()[..] {
        [
            CheckSpec::Tcp(t),
            CheckSpec::Tcp(ts),
            CheckSpec::Dns(d),
            CheckSpec::Http(h),
        ] => {
            assert_eq!(
                (t.address.as_str(), t.tls.is_some()),
                ("mail.example:25", false)
            );
            assert_eq!(
                (ts.address.as_str(), ts.tls.is_some()),
                ("mail.example:993", true)
            );
            assert_eq!(
                (d.server.as_str(), d.name.as_str()),
                ("10.0.0.53", "example.com")
            );
            assert_eq!(h.url, "https://a.example/");
        }
        ref other => panic!("unexpected specs: {other:?}"),
    }
    assert_eq!(c.checks[0].target, "mail.example:25");
}

#[test]
fn explicit_kind_that_contradicts_the_target_or_is_unknown_is_an_error() {
    assert_one(
        &[(
            "k.toml",
            "[[check]]\nname = \"x\"\nkind = \"dns\"\ntarget = \"https://a/\"\n",
        )],
        "k.toml:3:8:",
        &["kind:", "does not match"],
    );
    assert_one(
        &[(
            "k.toml",
            "[[check]]\nname = \"x\"\nkind = \"udp\"\ntarget = \"a:1\"\n",
        )],
        "k.toml:3:8:",
        &["kind:", "\"tls\""],
    );
    assert_one(
        &[(
            "k.toml",
            "[[check]]\nname = \"x\"\nkind = \"http\"\ntarget = \"a.example\"\n",
        )],
        "k.toml:4:10:",
        &["needs an http:// or https:// URL"],
    );
}
