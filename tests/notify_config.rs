//! `[[channel]]`, `[[route]]` and `[[policy]]` in alert-rules: defaults,
//! secrets from files (never printed; `*_env` is exercised by
//! notify_process.rs), and every
//! mistake reported at its file:line:column.

use std::path::PathBuf;
use std::time::Duration;

use varde::coordinator::rules::parse_files;
use varde::notify::channel::ChannelKind;
use varde::notify::channel::email::SmtpTls;
use varde::notify::route::TeamRef;

fn errors(text: &str) -> Vec<String> {
    match parse_files(&[(PathBuf::from("n.toml"), text.to_owned())]) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn a_full_configuration_with_defaults_and_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pd.key"), "pd-routing-key-123\n").unwrap();
    std::fs::write(
        dir.path().join("slack.url"),
        "https://hooks.slack.com/services/T/B/SECRETPART\n",
    )
    .unwrap();
    let text = r#"
[[channel]]
name = "email"
type = "email"
smtp_host = "smtp.example.com"
from = "varde <varde@example.com>"
to = ["ops@example.com"]
group_wait = "30s"
group_interval = "5m"

[[channel]]
name = "slack"
type = "slack"
url_file = "slack.url"

[[channel]]
name = "pd"
type = "pagerduty"
routing_key_file = "pd.key"
max_in_flight = 8
expire_after = "1h"

[[channel]]
name = "console"
type = "console"

[oncall]
fallback = "ops"

[[team]]
name = "ops"
timezone = "UTC"
contacts = ["email:ops@example.com", "slack:#ops", "pd"]

[[route]]
match = { severity = "page" }
policy = "page"

[[route]]
policy = "rest"

[[policy]]
name = "page"
ack_timeout = "5m"
repeat = "1h"
[[policy.level]]
teams = ["on_duty"]
[[policy.level]]
teams = ["next_on_duty", "label:owner"]
channels = ["email"]
during_shift = true

[[policy]]
name = "rest"
[[policy.level]]
contacts = ["console"]
"#;
    let path = dir.path().join("n.toml");
    let r = parse_files(&[(path, text.to_owned())]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.channels.len(), 4);
    let email = &r.channels[0];
    match &email.kind {
        ChannelKind::Email(e) => {
            assert_eq!((e.port, e.tls), (587, SmtpTls::StartTls));
            assert_eq!(e.to, ["ops@example.com"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(email.group_wait, Duration::from_secs(30));
    assert_eq!(email.timeout, Duration::from_secs(10));
    assert_eq!(email.max_in_flight, 4);
    assert_eq!(email.expire_after, Duration::from_secs(12 * 3600));
    match &r.channels[1].kind {
        ChannelKind::Slack(s) => assert!(s.url.expose().ends_with("SECRETPART")),
        other => panic!("{other:?}"),
    }
    match &r.channels[2].kind {
        ChannelKind::PagerDuty(p) => {
            assert_eq!(p.routing_key.expose(), "pd-routing-key-123");
            assert_eq!(p.url, "https://events.pagerduty.com/v2/enqueue");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.channels[2].max_in_flight, 8);
    // Secrets never print.
    let debug = format!("{:?}", r.channels);
    assert!(
        !debug.contains("SECRETPART") && !debug.contains("pd-routing-key"),
        "{debug}"
    );

    assert_eq!(r.routes.len(), 2);
    assert_eq!(r.routes[1].policy, "rest");
    let page = &r.policies[0];
    assert_eq!(page.ack_timeout, Duration::from_secs(300));
    assert_eq!(page.repeat, Some(Duration::from_secs(3600)));
    assert_eq!(page.levels[0].teams, [TeamRef::OnDuty]);
    assert_eq!(
        page.levels[1].teams,
        [TeamRef::NextOnDuty, TeamRef::Label("owner".into())]
    );
    assert!(page.levels[1].during_shift);
    assert_eq!(r.policies[1].ack_timeout, Duration::from_secs(15 * 60));
}

#[test]
fn mistakes_are_reported_where_they_are_written() {
    let text = r#"[[channel]]
name = "mail"
type = "email"
smtp_host = "localhost"
from = "not an address"

[[channel]]
name = "hook"
type = "webhook"
url_env = "VARDE_TEST_SURELY_NOT_SET"

[[channel]]
name = "pd"
type = "pagerduty"
routing_key = "inline"

[[channel]]
name = "x"
type = "sms"

[[route]]
match = { severity = "page" }
policy = "pager"

[[policy]]
name = "page"
[[policy.level]]
teams = ["emea"]
contacts = ["sms:123", "con:someone"]
channels = ["fax"]

[[policy]]
name = "empty"
ack_timeout = "soon"
[[policy.level]]
during_shift = "yes"

[[channel]]
name = "con"
type = "console"
"#;
    let e = errors(text);
    let want = [
        "n.toml:5:8: from: invalid address \"not an address\"",
        "n.toml:10:11: url_env: environment variable VARDE_TEST_SURELY_NOT_SET is not set",
        "n.toml:12:1: channel: give exactly one of `routing_key_env`, `routing_key_file`",
        "n.toml:15:1: unknown field `routing_key`",
        "n.toml:19:8: type: unknown channel type \"sms\"",
        "n.toml:23:10: policy: unknown policy \"pager\" (policies: page)",
        "n.toml:28:10: teams: unknown team \"emea\" (no [[team]] is defined)",
        "n.toml:29:13: contact \"sms:123\": unknown channel \"sms\"",
        "n.toml:29:24: contact \"con:someone\": channel \"con\" takes no address",
        "n.toml:30:13: channels: unknown channel \"fax\"",
        "n.toml:34:15: ack_timeout: invalid duration \"soon\"",
        "n.toml:36:16: during_shift: expected true or false",
    ];
    for w in want {
        assert!(
            e.iter().any(|l| l.starts_with(w)),
            "missing {w:?} in\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), want.len() + 1, "{}", e.join("\n"));
    assert!(
        e.iter().any(|l| l.contains("level: give `teams`")),
        "{}",
        e.join("\n")
    );
}
