//! The API of on-call and delivery: who is on call (with overrides),
//! overrides themselves, and the signed acknowledge/resolve links that
//! messages carry.
//!
//! | method | path | token | what |
//! |---|---|---|---|
//! | GET | `/api/v1/oncall?at=TIME` | – | the team on duty and its contacts after overrides |
//! | GET | `/api/v1/overrides` | – | overrides not over yet |
//! | POST | `/api/v1/overrides` | API | `{team, by_team?, contacts?, starts_at?, ends_at? \| duration?, comment?}` |
//! | DELETE | `/api/v1/overrides/{id}` | API | ends an override now |
//! | GET | `/ack/{id}?action=&exp=&sig=` | link | a confirmation page |
//! | POST | `/ack/{id}?action=&exp=&sig=` | link | acknowledges (or resolves) |
//!
//! A link's GET never changes anything (mail scanners follow links); only
//! the POST of its confirmation page does. Links are HMAC-signed with an
//! expiry ([`crate::notify::links`]); a tampered, expired or unknown link
//! gets a 403 page saying why, and changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::super::daemon::Shared;
use super::super::engine::ActionError;
use super::{api_auth, blocking, error, parse_id, parse_json, store_error};
use crate::notify::links::{self, LinkAction};
use crate::notify::route::{Contact, Override, Router};

// === on call ===

#[derive(Deserialize)]
pub(super) struct AtQuery {
    at: Option<String>,
}

pub(super) async fn oncall(State(s): State<Arc<Shared>>, Query(q): Query<AtQuery>) -> Response {
    let at = match q.at.as_deref() {
        None => Utc::now(),
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("at: invalid RFC 3339 time {t:?}: {e}"),
                );
            }
        },
    };
    let cfg = s.config();
    let Some(oncall) = cfg.rules.oncall.as_ref() else {
        return error(StatusCode::NOT_FOUND, "no on-call schedule is configured");
    };
    let store = s.store.clone();
    let overrides = match blocking(move || store.overrides(at)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return store_error(&e),
        Err(r) => return r,
    };
    let router = Router {
        routes: &[],
        policies: &[],
        oncall: Some(oncall),
        overrides: &overrides,
    };
    let duty = oncall.on_duty(at);
    let contacts: Vec<String> = router
        .team_contacts(&duty.team, at)
        .iter()
        .map(Contact::to_string)
        .collect();
    let active: Vec<&Override> = overrides.iter().filter(|o| o.active(at)).collect();
    let next = oncall
        .coverage(at, at + chrono::Duration::days(8))
        .into_iter()
        .find(|seg| seg.team != duty.team)
        .map(|seg| json!({ "team": seg.team, "at": seg.start }));
    axum::Json(json!({
        "at": at,
        "team": duty.team,
        "covering": duty.covering,
        "fallback": duty.fallback,
        "contacts": contacts,
        "overrides": active,
        "next": next,
    }))
    .into_response()
}

// === overrides ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewOverride {
    team: String,
    by_team: Option<String>,
    #[serde(default)]
    contacts: Vec<String>,
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    /// Alternative to `ends_at`: humantime, from `starts_at`.
    duration: Option<String>,
    #[serde(default)]
    comment: String,
}

pub(super) async fn list_overrides(State(s): State<Arc<Shared>>) -> Response {
    let store = s.store.clone();
    match blocking(move || store.overrides(Utc::now())).await {
        Ok(Ok(o)) => axum::Json(json!({ "overrides": o })).into_response(),
        Ok(Err(e)) => store_error(&e),
        Err(r) => r,
    }
}

pub(super) async fn add_override(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cred = match api_auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let n: NewOverride = match parse_json(&body, false) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let now = Utc::now();
    let o = match validate_override(&s, n, &cred.name, now) {
        Ok(o) => o,
        Err(msg) => return error(StatusCode::BAD_REQUEST, msg),
    };
    let store = s.store.clone();
    let o2 = o.clone();
    match blocking(move || store.insert_override(&o2)).await {
        Ok(Ok(id)) => {
            tracing::info!(id, team = %o.team, author = %o.author, "on-call override added");
            s.wake_delivery();
            (
                StatusCode::CREATED,
                axum::Json(json!({ "override": Override { id, ..o } })),
            )
                .into_response()
        }
        Ok(Err(e)) => store_error(&e),
        Err(r) => r,
    }
}

fn validate_override(
    s: &Shared,
    n: NewOverride,
    author: &str,
    now: DateTime<Utc>,
) -> Result<Override, String> {
    let cfg = s.config();
    let Some(oncall) = cfg.rules.oncall.as_ref() else {
        return Err("no on-call schedule is configured".into());
    };
    let known = |t: &str| oncall.team(t).is_some();
    let teams = || {
        oncall
            .teams
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !known(&n.team) {
        return Err(format!(
            "team: unknown team {:?} (teams: {})",
            n.team,
            teams()
        ));
    }
    if let Some(b) = &n.by_team {
        if !known(b) {
            return Err(format!("by_team: unknown team {b:?} (teams: {})", teams()));
        }
        if *b == n.team {
            return Err("by_team: a team cannot replace itself".into());
        }
    }
    if n.by_team.is_none() && n.contacts.is_empty() {
        return Err("give by_team, contacts, or both: who takes the pages".into());
    }
    for c in &n.contacts {
        let contact = Contact::parse(c).map_err(|e| format!("contacts: {e}"))?;
        match cfg
            .rules
            .channels
            .iter()
            .find(|ch| ch.name == contact.channel)
        {
            None => {
                return Err(format!(
                    "contacts: {c:?}: unknown channel {:?}",
                    contact.channel
                ));
            }
            Some(ch) if contact.address.is_some() && !ch.kind.takes_address() => {
                return Err(format!(
                    "contacts: {c:?}: channel {:?} takes no address",
                    contact.channel
                ));
            }
            Some(_) => {}
        }
    }
    let starts_at = n.starts_at.unwrap_or(now);
    let ends_at = super::window_end(starts_at, n.ends_at, n.duration.as_deref())?;
    if ends_at <= starts_at {
        return Err("ends_at must be after starts_at".into());
    }
    if ends_at <= now {
        return Err("ends_at is in the past".into());
    }
    Ok(Override {
        id: 0,
        team: n.team,
        by_team: n.by_team,
        contacts: n.contacts,
        starts_at,
        ends_at,
        author: author.to_owned(),
        comment: n.comment,
        created_at: now,
        expired_at: None,
    })
}

pub(super) async fn expire_override(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let cred = match api_auth(&s, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let id = match parse_id(&id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let store = s.store.clone();
    match blocking(move || store.expire_override(id, Utc::now())).await {
        Ok(Ok(true)) => {
            tracing::info!(id, by = %cred.name, "on-call override ended");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Ok(false)) => error(StatusCode::NOT_FOUND, format!("no live override {id}")),
        Ok(Err(e)) => store_error(&e),
        Err(r) => r,
    }
}

// === signed links ===

fn page(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert("cache-control", "no-store".parse().expect("static header"));
    h.insert(
        "content-security-policy",
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
            .parse()
            .expect("static header"),
    );
    r
}

/// Checks a link: the incident, the action, and who acts — the recipient
/// the link was signed for (`email:alice@example.com via link`), or `link`
/// for a link that names none; the error response when it does not hold.
fn check_link(
    s: &Shared,
    id: &str,
    q: &HashMap<String, String>,
) -> Result<(i64, LinkAction, String), Response> {
    let Some(signer) = s.links.as_ref() else {
        return Err(page(
            StatusCode::NOT_FOUND,
            links::error_page("links are not enabled on this coordinator"),
        ));
    };
    let Ok(id) = id.parse::<i64>() else {
        return Err(page(
            StatusCode::BAD_REQUEST,
            links::error_page("this link names no incident"),
        ));
    };
    let get = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    let to = q.get("to").map(String::as_str);
    let actor = to.map_or_else(|| "link".to_owned(), |to| format!("{to} via link"));
    signer
        .verify_to(id, get("action"), get("exp"), to, get("sig"), Utc::now())
        .map(|a| (id, a, actor))
        .map_err(|e| {
            tracing::info!(incident = id, error = %e, "link refused");
            page(StatusCode::FORBIDDEN, links::error_page(&e.to_string()))
        })
}

async fn headline(s: &Arc<Shared>, id: i64) -> Result<(String, String), Response> {
    let store = s.store.clone();
    match blocking(move || store.incident(id)).await {
        Ok(Ok(Some(d))) => {
            let i = d.incident;
            let what = if i.check.is_empty() {
                i.region
                    .clone()
                    .map_or(i.rule.clone(), |r| format!("probes in {r}"))
            } else {
                i.check.clone()
            };
            Ok((
                format!("{what} ({}, {})", i.rule, i.severity),
                i.state.as_str().to_owned(),
            ))
        }
        Ok(Ok(None)) => Err(page(
            StatusCode::NOT_FOUND,
            links::error_page(&format!("there is no incident {id}")),
        )),
        Ok(Err(e)) => Err(store_error(&e)),
        Err(r) => Err(r),
    }
}

pub(super) async fn link_get(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    let (id, action, _) = match check_link(&s, &id, &q) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (title, _) = match headline(&s, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    page(
        StatusCode::OK,
        links::confirm_page(id, action, &title, uri.query().unwrap_or("")),
    )
}

pub(super) async fn link_post(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (id, action, actor) = match check_link(&s, &id, &q) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (title, _) = match headline(&s, id).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let s2 = s.clone();
    let by = actor.clone();
    let r = blocking(move || {
        let mut e = s2.engine();
        let now = Utc::now();
        match action {
            LinkAction::Ack => e
                .acknowledge(id, &by, "acknowledged by a signed link", now)
                .map(|_| ()),
            LinkAction::Resolve => e.resolve_by_hand(id, &by, "resolved by a signed link", now),
        }
    })
    .await;
    match r {
        Ok(Ok(())) => {
            tracing::info!(
                incident = id,
                action = action.as_str(),
                "incident changed by a signed link"
            );
            s.incident_changed();
            page(
                StatusCode::OK,
                links::done_page(id, action, &title, Some(&actor)),
            )
        }
        Ok(Err(ActionError::NotFound(_))) => page(
            StatusCode::NOT_FOUND,
            links::error_page(&format!("there is no incident {id}")),
        ),
        Ok(Err(e)) => page(StatusCode::CONFLICT, links::error_page(&e.to_string())),
        Err(r) => r,
    }
}
