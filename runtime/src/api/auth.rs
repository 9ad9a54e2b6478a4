//! Bearer-token authorisation: one check, applied to every route but `/healthz`.
//!
//! A token carries scopes: `read` (GET routes and `/metrics`), `run` (read, and starting and
//! cancelling runs), `admin` (everything, including pause, resume and breaker reset) and
//! `alert` (only the intake under `/hooks/`: the token Alertmanager holds). While the store
//! holds no active token, a server on a loopback address needs none; on any other address it
//! always does (and `serve` refuses to start there without one).
//!
//! Tokens are looked up through the store by the hash of the secret, cached for
//! [`CACHE_TTL`] so a revocation takes effect within seconds. A secret never reaches a log
//! line or an error message.

use super::error::ApiError;
use crate::store::{Store, TokenRecord};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, HOST, ORIGIN};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token lookup (and the count of active tokens) is trusted.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(2);

/// How often a token's `last_used_at` is written.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Lookups kept at most; the cache starts over beyond it (unknown secrets are cached too).
const CACHE_MAX: usize = 4096;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// GET routes and `/metrics`.
    Read,
    /// `read`, and starting and cancelling runs.
    Run,
    /// Everything.
    Admin,
    /// Only the alert and webhook intake (`/hooks/…`).
    Alert,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Run, Scope::Admin, Scope::Alert];

    /// The name stored and written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Run => "run",
            Scope::Admin => "admin",
            Scope::Alert => "alert",
        }
    }

    /// Whether a token with this scope may use a route that needs `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Run => matches!(needed, Scope::Read | Scope::Run),
            Scope::Read => needed == Scope::Read,
            Scope::Alert => needed == Scope::Alert,
        }
    }

    /// The scopes whose tokens may use a route that needs `self`, for messages.
    fn accepted_by(self) -> String {
        let names: Vec<String> = Scope::ALL
            .iter()
            .filter(|s| s.allows(self))
            .map(|s| format!("`{}`", s.as_str()))
            .collect();
        names.join(" or ")
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a scope (one of: read, run, admin, alert)"))
    }
}

/// Without tokens, a loopback server would take whatever a web page in the operator's browser
/// sends it: a cross-site form post, or a DNS-rebound name that resolves to 127.0.0.1. So it
/// answers only requests that no browser page sent (no `Origin`) addressed to a loopback
/// name or an address (`Host`). With tokens this is moot: a browser never adds the bearer
/// header on its own.
fn open_to(headers: &HeaderMap) -> Result<(), ApiError> {
    if headers.contains_key(ORIGIN) {
        return Err(ApiError::forbidden(
            "requests from web pages need a token while none exists (create one with `runloom token create`)",
        ));
    }
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    if name.is_empty() || name == "localhost" || name.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "`Host: {host}` is not this machine's loopback name; without tokens only `localhost` or an address is answered"
        )))
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Nobody needs a token (no active tokens, loopback address).
    Open,
    /// A token, by id and name.
    Token {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
}

/// For log lines: which token (by name and id, never the secret).
impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Open => f.write_str("a local request (no tokens exist)"),
            Caller::Token { id, name } => write!(f, "token `{name}` ({id})"),
        }
    }
}

struct Cached<T> {
    value: T,
    at: Instant,
}

impl<T> Cached<T> {
    fn fresh(&self, now: Instant) -> bool {
        now.duration_since(self.at) < CACHE_TTL
    }
}

#[derive(Default)]
struct Cache {
    /// How many tokens are active.
    active: Option<Cached<i64>>,
    /// Lookups by the SHA-256 of the secret: the record, or `None` for an unknown secret.
    tokens: HashMap<[u8; 32], Cached<Option<TokenRecord>>>,
    /// When each token's use was last written.
    touched: HashMap<String, Instant>,
}

/// The authorisation check, with its cache.
pub(crate) struct Auth {
    store: Store,
    /// Ask for a token even when the store holds none (a non-loopback address).
    always: bool,
    cache: Mutex<Cache>,
}

impl Auth {
    pub(crate) fn new(store: Store, always: bool) -> Self {
        Self {
            store,
            always,
            cache: Mutex::default(),
        }
    }

    /// Check the request's credentials against the scope a route needs.
    pub(crate) async fn check(
        &self,
        headers: &HeaderMap,
        needed: Scope,
    ) -> Result<Caller, ApiError> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            if !self.always && self.active_tokens().await? == 0 {
                open_to(headers)?;
                return Ok(Caller::Open);
            }
            return Err(ApiError::unauthorized(format!(
                "this route needs `Authorization: Bearer <token>` with scope {} (create one with `runloom token create`)",
                needed.accepted_by()
            )));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("the `Authorization` header is not `Bearer <token>`")
            })?;
        let token = self
            .lookup(secret)
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or_else(|| ApiError::unauthorized("the token is unknown or revoked"))?;
        let granted = token.scopes.iter().filter_map(|s| s.parse::<Scope>().ok());
        if !granted.clone().any(|s| s.allows(needed)) {
            let has: Vec<&str> = granted.map(Scope::as_str).collect();
            return Err(ApiError::forbidden(format!(
                "token `{}` has scope {}; this route needs {}",
                token.name,
                if has.is_empty() {
                    "none".to_string()
                } else {
                    has.join(", ")
                },
                needed.accepted_by()
            )));
        }
        self.touch(&token.id);
        Ok(Caller::Token {
            id: token.id,
            name: token.name,
        })
    }

    async fn active_tokens(&self) -> Result<i64, ApiError> {
        let now = Instant::now();
        if let Some(n) = self
            .lock()
            .active
            .as_ref()
            .filter(|c| c.fresh(now))
            .map(|c| c.value)
        {
            return Ok(n);
        }
        let n = self.store.active_tokens().await?;
        self.lock().active = Some(Cached { value: n, at: now });
        Ok(n)
    }

    async fn lookup(&self, secret: &str) -> Result<Option<TokenRecord>, ApiError> {
        let key: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        let now = Instant::now();
        if let Some(hit) = self.lock().tokens.get(&key).filter(|c| c.fresh(now)) {
            return Ok(hit.value.clone());
        }
        let found = self.store.verify_token(secret).await?;
        let mut cache = self.lock();
        if cache.tokens.len() >= CACHE_MAX {
            cache.tokens.clear();
        }
        cache.tokens.insert(
            key,
            Cached {
                value: found.clone(),
                at: now,
            },
        );
        Ok(found)
    }

    /// Record the token's use, at most once a minute, without waiting for the write.
    fn touch(&self, id: &str) {
        let now = Instant::now();
        let mut cache = self.lock();
        let due = cache
            .touched
            .get(id)
            .is_none_or(|at| now.duration_since(*at) >= TOUCH_EVERY);
        if due {
            if cache.touched.len() >= CACHE_MAX {
                cache.touched.clear();
            }
            cache.touched.insert(id.to_string(), now);
            drop(cache);
            self.store.touch_token(id, crate::run::now_ms());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache holds no invariant a panic could break; keep using it.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_tokens_only_requests_no_web_page_sent_to_a_loopback_name_are_answered() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, axum::http::HeaderValue::from_static(v));
            }
            open_to(&h).is_ok()
        };
        assert!(with(&[]));
        assert!(with(&[("host", "127.0.0.1:8080")]));
        assert!(with(&[("host", "localhost:8080")]));
        assert!(with(&[("host", "[::1]:8080")]));
        assert!(with(&[("host", "localhost")]));
        assert!(!with(&[("host", "rebind.attacker.example:8080")]));
        assert!(!with(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example")
        ]));
    }

    #[test]
    fn scopes_nest_except_alert_which_only_reaches_the_intake() {
        use Scope::*;
        let table = [
            // (token scope, route needs, allowed)
            (Read, Read, true),
            (Read, Run, false),
            (Read, Admin, false),
            (Read, Alert, false),
            (Run, Read, true),
            (Run, Run, true),
            (Run, Admin, false),
            (Run, Alert, false),
            (Admin, Read, true),
            (Admin, Run, true),
            (Admin, Admin, true),
            (Admin, Alert, true),
            (Alert, Read, false),
            (Alert, Run, false),
            (Alert, Admin, false),
            (Alert, Alert, true),
        ];
        for (has, needed, allowed) in table {
            assert_eq!(has.allows(needed), allowed, "{has} for a {needed} route");
        }
        assert_eq!(Run.accepted_by(), "`run` or `admin`");
        assert_eq!("admin".parse::<Scope>(), Ok(Admin));
        assert_eq!(
            "root".parse::<Scope>().unwrap_err(),
            "`root` is not a scope (one of: read, run, admin, alert)"
        );
    }
}
