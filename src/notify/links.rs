//! Signed acknowledge/resolve links.
//!
//! A message about a paging incident carries two links, for example
//!
//! ```text
//! http://varde.example:9480/ack/12?action=ack&exp=1767229200&sig=3f1c…
//! ```
//!
//! `sig` is the hex HMAC-SHA256, under a key only the coordinator holds,
//! of `v1:{incident}:{action}:{exp}`; so nobody can forge a link for
//! another incident or action, or stretch its expiry. The key lives in a
//! file ([`load_or_create_key`]) so links in old messages keep working
//! across restarts.
//!
//! Opening a link (GET) only shows a confirmation page
//! ([`confirm_page`]); the action happens when its form is POSTed. Mail
//! scanners and chat unfurlers fetch links on their own, and must not
//! acknowledge pages on someone's behalf. The pages tell browsers not to
//! send the link (and its signature) as a `Referer`.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Shortest key [`LinkSigner::new`] accepts, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// What a link does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkAction {
    /// Acknowledge the incident: stop repeats and escalation.
    Ack,
    /// Resolve the incident by hand.
    Resolve,
}

impl LinkAction {
    /// The value in the `action` query parameter: `ack` or `resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkAction::Ack => "ack",
            LinkAction::Resolve => "resolve",
        }
    }

    /// Reads an `action` query parameter.
    pub fn parse(s: &str) -> Option<LinkAction> {
        match s {
            "ack" => Some(LinkAction::Ack),
            "resolve" => Some(LinkAction::Resolve),
            _ => None,
        }
    }

    /// `Acknowledge` / `Resolve`, for buttons and pages.
    pub fn verb(self) -> &'static str {
        match self {
            LinkAction::Ack => "Acknowledge",
            LinkAction::Resolve => "Resolve",
        }
    }

    /// `acknowledged` / `resolved`.
    pub fn past(self) -> &'static str {
        match self {
            LinkAction::Ack => "acknowledged",
            LinkAction::Resolve => "resolved",
        }
    }
}

impl fmt::Display for LinkAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a link or a signer was refused. The messages are meant for the
/// person who clicked, and never include key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The `action` parameter is neither `ack` nor `resolve`.
    #[error("this link asks for an unknown action")]
    UnknownAction,
    /// `exp` is not a plain number of seconds.
    #[error("this link's expiry time is malformed")]
    MalformedExpiry,
    /// `sig` is not 64 hex digits.
    #[error("this link's signature is malformed; was the link cut short?")]
    MalformedSignature,
    /// The signature does not match: the link was altered or is not ours.
    #[error("this link is not valid: it was altered or signed with another key")]
    BadSignature,
    /// The link is genuine but too old.
    #[error("this link expired at {at}; acknowledge from the web UI, API or CLI instead")]
    Expired {
        /// When it expired.
        at: DateTime<Utc>,
    },
    /// The key given to [`LinkSigner::new`] is too short.
    #[error("the link signing key is {len} bytes; at least {MIN_KEY_LEN} are needed")]
    KeyTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// The public base URL is not `http://` or `https://`.
    #[error("the public URL must start with http:// or https://")]
    BadBaseUrl,
}

/// Makes and checks signed links.
#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
    base: String,
}

impl fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkSigner")
            .field("key", &"<redacted>")
            .field("base", &self.base)
            .finish()
    }
}

impl LinkSigner {
    /// `key`: at least [`MIN_KEY_LEN`] bytes (see [`load_or_create_key`]);
    /// `base_url`: how people reach the coordinator, such as
    /// `https://varde.example.com` (a trailing `/` is ignored).
    pub fn new(key: &[u8], base_url: &str) -> Result<LinkSigner, LinkError> {
        if key.len() < MIN_KEY_LEN {
            return Err(LinkError::KeyTooShort { len: key.len() });
        }
        let base = base_url.trim().trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(LinkError::BadBaseUrl);
        }
        Ok(LinkSigner {
            key: key.to_vec(),
            base: base.to_owned(),
        })
    }

    /// The public base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/ack/{incident}?action={ack|resolve}&exp={unix}&sig={hex}`.
    pub fn url(&self, incident: i64, action: LinkAction, expires: DateTime<Utc>) -> String {
        let exp = expires.timestamp();
        let sig = hex_encode(
            &self
                .mac(incident, action, exp, None)
                .finalize()
                .into_bytes(),
        );
        format!(
            "{}/ack/{incident}?action={}&exp={exp}&sig={sig}",
            self.base,
            action.as_str()
        )
    }

    /// A link sent to one recipient (a contact such as
    /// `email:alice@example.com`): `&to=` names it and the signature covers
    /// it, so the incident's timeline records who acted, and a link cannot
    /// be re-labelled as someone else's.
    pub fn url_to(
        &self,
        incident: i64,
        action: LinkAction,
        expires: DateTime<Utc>,
        to: &str,
    ) -> String {
        let exp = expires.timestamp();
        let sig = hex_encode(
            &self
                .mac(incident, action, exp, Some(to))
                .finalize()
                .into_bytes(),
        );
        let to: String = url::form_urlencoded::byte_serialize(to.as_bytes()).collect();
        format!(
            "{}/ack/{incident}?action={}&exp={exp}&to={to}&sig={sig}",
            self.base,
            action.as_str()
        )
    }

    /// Checks a link's parts as they arrived (the path's incident, the
    /// query's `action`, `exp` and `sig`) at `now`. The signature is
    /// compared in constant time, before the expiry is looked at.
    pub fn verify(
        &self,
        incident: i64,
        action: &str,
        exp: &str,
        sig: &str,
        now: DateTime<Utc>,
    ) -> Result<LinkAction, LinkError> {
        self.verify_to(incident, action, exp, None, sig, now)
    }

    /// [`LinkSigner::verify`] for a link that may name its recipient
    /// (`to`, as decoded from the query; `None` when absent).
    pub fn verify_to(
        &self,
        incident: i64,
        action: &str,
        exp: &str,
        to: Option<&str>,
        sig: &str,
        now: DateTime<Utc>,
    ) -> Result<LinkAction, LinkError> {
        let action = LinkAction::parse(action).ok_or(LinkError::UnknownAction)?;
        let exp_secs = parse_exp(exp).ok_or(LinkError::MalformedExpiry)?;
        let tag = hex_decode(sig)
            .filter(|t| t.len() == 32)
            .ok_or(LinkError::MalformedSignature)?;
        self.mac(incident, action, exp_secs, to)
            .verify_slice(&tag)
            .map_err(|_| LinkError::BadSignature)?;
        let at = DateTime::<Utc>::from_timestamp(exp_secs, 0).ok_or(LinkError::MalformedExpiry)?;
        if now >= at {
            return Err(LinkError::Expired { at });
        }
        Ok(action)
    }

    /// v1 links name no recipient; v2 links end with it (the fields
    /// before it hold no `:`, so the message is unambiguous).
    fn mac(&self, incident: i64, action: LinkAction, exp: i64, to: Option<&str>) -> Hmac<Sha256> {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        let action = action.as_str();
        match to {
            None => mac.update(format!("v1:{incident}:{action}:{exp}").as_bytes()),
            Some(to) => mac.update(format!("v2:{incident}:{action}:{exp}:{to}").as_bytes()),
        }
        mac
    }
}

/// Only the canonical decimal form, so one link has one spelling.
fn parse_exp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Reads the link signing key at `path`, or creates it with 32 random
/// bytes (mode 0600) when the file does not exist. The file holds the raw
/// key; any file of at least [`MIN_KEY_LEN`] bytes works (for example
/// `openssl rand -hex 32 > key`).
pub fn load_or_create_key(path: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(key) => return check_key(path, key),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; MIN_KEY_LEN];
    getrandom::getrandom(&mut key).map_err(|e| io::Error::other(format!("random key: {e}")))?;

    // Write to a private temporary file, then link it into place: the key
    // file appears complete or not at all, and if another process created
    // it meanwhile, its key wins and we read that.
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "key path has no file name"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = open_private(&tmp)?;
        f.write_all(&key)?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => check_key(path, std::fs::read(path)?),
        Err(e) => Err(e),
    }
}

fn check_key(path: &Path, key: Vec<u8>) -> io::Result<Vec<u8>> {
    if key.len() < MIN_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: link signing key is {} bytes; at least {MIN_KEY_LEN} are needed",
                path.display(),
                key.len()
            ),
        ));
    }
    Ok(key)
}

/// Creates `path` (failing if it exists) readable by its owner only: for
/// key and token files.
#[cfg(unix)]
pub(crate) fn open_private(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
pub(crate) fn open_private(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

// === pages ===

/// Escapes text for HTML element content and quoted attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"robots\" content=\"noindex, nofollow\">\n\
         <title>{}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}}\
         button{{font-size:1.1em;padding:.4em 1.2em}}</style>\n\
         </head>\n<body>\n{body}\n</body>\n</html>\n",
        html_escape(title)
    )
}

/// The page a link's GET shows: asks to confirm, and POSTs the same query
/// (`query` is the request's raw query string, without `?`) to the same
/// path when confirmed. `title` is the incident's headline.
pub fn confirm_page(incident: i64, action: LinkAction, title: &str, query: &str) -> String {
    let question = format!("{} incident {incident}: {title}?", action.verb());
    let body = format!(
        "<h1>{q}</h1>\n<form method=\"post\" action=\"?{query}\">\n\
         <button type=\"submit\">{verb}</button>\n</form>",
        q = html_escape(&question),
        query = html_escape(query),
        verb = html_escape(action.verb()),
    );
    page(&question, &body)
}

/// The page after the action: `Incident 12 acknowledged: api-health down
/// in 3/3 regions`, and who did it when known.
pub fn done_page(incident: i64, action: LinkAction, title: &str, by: Option<&str>) -> String {
    let mut line = format!("Incident {incident} {}: {title}", action.past());
    if let Some(by) = by {
        line.push_str(&format!(" (by {by})"));
    }
    page(&line, &format!("<h1>{}</h1>", html_escape(&line)))
}

/// A page explaining why a link did not work (`reason` is typically a
/// [`LinkError`]'s message).
pub fn error_page(reason: &str) -> String {
    page(
        "Link not accepted",
        &format!("<h1>Link not accepted</h1>\n<p>{}</p>", html_escape(reason)),
    )
}

// === hex ===

/// Lower-case hex.
pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Hex (either case) to bytes; `None` if malformed.
pub(crate) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let s = s.as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}
