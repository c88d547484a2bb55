//! Signed acknowledge/resolve links: round trips, every kind of tampering,
//! expiry, the key file, and the HTML pages.

use chrono::{DateTime, Duration, TimeZone, Utc};
use varde::notify::links::{
    LinkAction, LinkError, LinkSigner, confirm_page, done_page, error_page, load_or_create_key,
};

const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn signer() -> LinkSigner {
    LinkSigner::new(KEY, "http://127.0.0.1:9480/").unwrap()
}

/// The parts a handler gets: (incident from the path, action, exp, sig).
fn parts(url: &str) -> (i64, String, String, String) {
    let rest = url.strip_prefix("http://127.0.0.1:9480/ack/").unwrap();
    let (incident, query) = rest.split_once('?').unwrap();
    let mut action = String::new();
    let mut exp = String::new();
    let mut sig = String::new();
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap();
        match k {
            "action" => action = v.to_owned(),
            "exp" => exp = v.to_owned(),
            "sig" => sig = v.to_owned(),
            other => panic!("unexpected parameter {other}"),
        }
    }
    (incident.parse().unwrap(), action, exp, sig)
}

#[test]
fn ack_and_resolve_links_round_trip() {
    let s = signer();
    let exp = now() + Duration::hours(24);
    for action in [LinkAction::Ack, LinkAction::Resolve] {
        let url = s.url(12, action, exp);
        assert!(
            url.starts_with(&format!(
                "http://127.0.0.1:9480/ack/12?action={action}&exp={}&sig=",
                exp.timestamp()
            )),
            "{url}"
        );
        let (incident, a, e, sig) = parts(&url);
        assert_eq!(s.verify(incident, &a, &e, &sig, now()), Ok(action));
    }
}

#[test]
fn a_link_signed_for_a_recipient_names_it_and_cannot_be_relabelled() {
    let s = signer();
    let exp = now() + Duration::hours(1);
    let url = s.url_to(12, LinkAction::Ack, exp, "email:alice@example.com");
    let query = url.split_once('?').unwrap().1;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("to"), "email:alice@example.com");
    assert!(url.contains("&to=email%3Aalice%40example.com&"), "{url}");
    let (e, sig) = (get("exp"), get("sig"));
    let verify = |to: Option<&str>| s.verify_to(12, "ack", &e, to, &sig, now());
    assert_eq!(verify(Some("email:alice@example.com")), Ok(LinkAction::Ack));
    for forged in [
        Some("email:mallory@example.com"),
        Some("email:alice@example.com "),
        Some(""),
        None,
    ] {
        assert_eq!(verify(forged), Err(LinkError::BadSignature), "{forged:?}");
    }
    // A link without a recipient does not verify as anyone's either.
    let plain = parts(&s.url(12, LinkAction::Ack, exp));
    assert_eq!(
        s.verify_to(
            12,
            "ack",
            &plain.2,
            Some("email:alice@example.com"),
            &plain.3,
            now()
        ),
        Err(LinkError::BadSignature)
    );
}

#[test]
fn links_survive_a_new_signer_with_the_same_key() {
    let url = signer().url(7, LinkAction::Ack, now() + Duration::hours(1));
    let (i, a, e, sig) = parts(&url);
    let again = LinkSigner::new(KEY, "https://elsewhere.example").unwrap();
    assert_eq!(again.verify(i, &a, &e, &sig, now()), Ok(LinkAction::Ack));
    let other = LinkSigner::new(&[7u8; 32], "http://127.0.0.1:9480").unwrap();
    assert_eq!(
        other.verify(i, &a, &e, &sig, now()),
        Err(LinkError::BadSignature)
    );
}

#[test]
fn tampered_incident_is_rejected() {
    let s = signer();
    let (i, a, e, sig) = parts(&s.url(12, LinkAction::Ack, now() + Duration::hours(1)));
    assert_eq!(
        s.verify(i + 1, &a, &e, &sig, now()),
        Err(LinkError::BadSignature)
    );
}

#[test]
fn tampered_action_is_rejected() {
    let s = signer();
    let (i, _, e, sig) = parts(&s.url(12, LinkAction::Ack, now() + Duration::hours(1)));
    assert_eq!(
        s.verify(i, "resolve", &e, &sig, now()),
        Err(LinkError::BadSignature)
    );
    assert_eq!(
        s.verify(i, "delete", &e, &sig, now()),
        Err(LinkError::UnknownAction)
    );
}

#[test]
fn tampered_expiry_is_rejected() {
    let s = signer();
    let (i, a, e, sig) = parts(&s.url(12, LinkAction::Ack, now() + Duration::hours(1)));
    let later = (e.parse::<i64>().unwrap() + 86_400).to_string();
    assert_eq!(
        s.verify(i, &a, &later, &sig, now()),
        Err(LinkError::BadSignature)
    );
    for bad in [
        "",
        "-1",
        "12a",
        "+5",
        &format!("0{e}"),
        "99999999999999999999",
    ] {
        assert_eq!(
            s.verify(i, &a, bad, &sig, now()),
            Err(LinkError::MalformedExpiry),
            "{bad:?}"
        );
    }
}

#[test]
fn tampered_signature_is_rejected() {
    let s = signer();
    let (i, a, e, sig) = parts(&s.url(12, LinkAction::Ack, now() + Duration::hours(1)));
    let mut flipped: Vec<char> = sig.chars().collect();
    flipped[0] = if flipped[0] == '0' { '1' } else { '0' };
    let flipped: String = flipped.into_iter().collect();
    assert_eq!(
        s.verify(i, &a, &e, &flipped, now()),
        Err(LinkError::BadSignature)
    );
    for bad in ["", &sig[..62], "zz", &format!("{sig}00")] {
        assert_eq!(
            s.verify(i, &a, &e, bad, now()),
            Err(LinkError::MalformedSignature),
            "{bad:?}"
        );
    }
    // Upper-case hex is the same signature.
    assert_eq!(
        s.verify(i, &a, &e, &sig.to_uppercase(), now()),
        Ok(LinkAction::Ack)
    );
}

#[test]
fn expired_link_is_rejected_with_a_readable_reason() {
    let s = signer();
    let exp = now() + Duration::minutes(30);
    let (i, a, e, sig) = parts(&s.url(12, LinkAction::Resolve, exp));
    assert!(
        s.verify(i, &a, &e, &sig, exp - Duration::seconds(1))
            .is_ok()
    );
    let err = s.verify(i, &a, &e, &sig, exp).unwrap_err();
    assert_eq!(err, LinkError::Expired { at: exp });
    let msg = err.to_string();
    assert!(msg.contains("expired"), "{msg}");
    assert!(msg.contains("2026-03-01"), "{msg}");
}

#[test]
fn errors_never_show_the_key() {
    let s = signer();
    let (i, a, e, _) = parts(&s.url(12, LinkAction::Ack, now() + Duration::hours(1)));
    let err = s.verify(i, &a, &e, &"0".repeat(64), now()).unwrap_err();
    assert!(!err.to_string().contains("0123456789abcdef"));
    assert!(!format!("{s:?}").contains("0123456789abcdef"));
}

#[test]
fn signer_needs_a_long_key_and_an_http_base() {
    assert_eq!(
        LinkSigner::new(b"short", "http://x").unwrap_err(),
        LinkError::KeyTooShort { len: 5 }
    );
    assert_eq!(
        LinkSigner::new(KEY, "ftp://x").unwrap_err(),
        LinkError::BadBaseUrl
    );
    assert_eq!(
        LinkSigner::new(KEY, "https://v.example/").unwrap().base(),
        "https://v.example"
    );
}

#[test]
fn key_file_is_created_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("link.key");
    let key = load_or_create_key(&path).unwrap();
    assert_eq!(key.len(), 32);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(load_or_create_key(&path).unwrap(), key);
    // No temporary file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // A different file gets a different key.
    let other = load_or_create_key(&dir.path().join("other.key")).unwrap();
    assert_ne!(other, key);
    // Links signed before a "restart" still verify after.
    let url = LinkSigner::new(&key, "http://127.0.0.1:9480").unwrap().url(
        3,
        LinkAction::Ack,
        now() + Duration::hours(1),
    );
    let (i, a, e, sig) = parts(&url);
    let reloaded =
        LinkSigner::new(&load_or_create_key(&path).unwrap(), "http://127.0.0.1:9480").unwrap();
    assert_eq!(reloaded.verify(i, &a, &e, &sig, now()), Ok(LinkAction::Ack));
}

#[test]
fn short_key_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("link.key");
    std::fs::write(&path, b"too short").unwrap();
    let err = load_or_create_key(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}

#[test]
fn confirm_page_escapes_and_posts_the_same_query() {
    let page = confirm_page(
        12,
        LinkAction::Ack,
        "<script>alert(1)</script> down",
        "action=ack&exp=1&sig=ab\"><script>",
    );
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; down"));
    assert!(page.contains("Acknowledge incident 12: "));
    assert!(page.contains(
        "<form method=\"post\" action=\"?action=ack&amp;exp=1&amp;sig=ab&quot;&gt;&lt;script&gt;\">"
    ));
    assert!(page.contains("no-referrer"));

    let page = confirm_page(
        12,
        LinkAction::Resolve,
        "api-health down in 3/3 regions",
        "action=resolve&exp=1&sig=ab",
    );
    assert!(page.contains("Resolve incident 12: api-health down in 3/3 regions?"));
}

#[test]
fn done_and_error_pages_escape() {
    let page = done_page(12, LinkAction::Ack, "a <b>", Some("<i>bob</i>"));
    assert!(page.contains("Incident 12 acknowledged: a &lt;b&gt; (by &lt;i&gt;bob&lt;/i&gt;)"));
    let page = error_page(&LinkError::BadSignature.to_string());
    assert!(page.contains("not valid"));
    assert!(!error_page("<script>").contains("<script>"));
}
