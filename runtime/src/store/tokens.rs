//! API bearer tokens: created with a random secret that is shown once and stored only as its
//! SHA-256 hash, listed without secrets, revoked by id, and looked up by hash.
//!
//! Looking a token up by its hash needs no constant-time comparison: the database compares
//! hashes, and a timing difference on a hash reveals nothing about the secret. Secrets never
//! reach a log line or an error message.

use super::Store;
use super::db::params;
use crate::run::now_ms;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

/// Every token starts with this, so secret scanners and people can tell what it is.
pub const TOKEN_PREFIX: &str = "rlt_";

/// A token as stored: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRecord {
    /// Id, used to revoke it.
    pub id: String,
    /// What it is for (`alertmanager`, `ci`), chosen by whoever created it.
    pub name: String,
    /// Scope names as given at creation.
    pub scopes: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds; updated at most once a minute per token.
    pub last_used_at: Option<i64>,
    /// Unix milliseconds, once revoked.
    pub revoked_at: Option<i64>,
}

/// A token just created: its record and the secret, which is not kept anywhere.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The stored part.
    pub record: TokenRecord,
    /// The bearer secret, `rlt_` and 64 hex digits.
    pub secret: String,
}

/// Hex SHA-256 of a secret: what the store keeps and looks up.
fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn token_from_row(r: &AnyRow) -> anyhow::Result<TokenRecord> {
    let scopes: String = r.try_get("scopes")?;
    Ok(TokenRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: scopes.split_whitespace().map(str::to_string).collect(),
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const TOKEN_COLUMNS: &str =
    "SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM tokens";

impl Store {
    /// Create a token with `scopes` (stored space-separated; the caller checks their names).
    /// Durable when this returns.
    pub async fn create_token(&self, name: &str, scopes: &[String]) -> anyhow::Result<NewToken> {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let record = TokenRecord {
            id: crate::run::new_id(),
            name: name.to_string(),
            scopes: scopes.to_vec(),
            created_at: now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        let (r, digest) = (record.clone(), hash(&secret));
        self.write(Box::new(move |conn| {
            let (r, digest) = (r.clone(), digest.clone());
            Box::pin(async move {
                conn.execute(
                    "INSERT INTO tokens (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
                    params![r.id, r.name, digest, r.scopes.join(" "), r.created_at],
                )
                .await
            })
        }))
        .await?;
        Ok(NewToken { record, secret })
    }

    /// Every token, oldest first, revoked ones included.
    pub async fn list_tokens(&self) -> anyhow::Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!("{TOKEN_COLUMNS} ORDER BY created_at, id"))
            .fetch_all(&self.inner.read)
            .await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revoke a token by id. `None` when no token has this id; otherwise the record, revoked
    /// (a token already revoked keeps its first revocation time).
    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<Option<TokenRecord>> {
        let (id, at) = (id.to_string(), now_ms());
        let key = id.clone();
        self.write(Box::new(move |conn| {
            let id = key.clone();
            Box::pin(async move {
                conn.execute(
                    "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                    params![at, id],
                )
                .await
            })
        }))
        .await?;
        let row = sqlx::query(&format!("{TOKEN_COLUMNS} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.inner.read)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// The token whose secret is `secret`, revoked or not; `None` for an unknown secret.
    pub async fn verify_token(&self, secret: &str) -> anyhow::Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!("{TOKEN_COLUMNS} WHERE hash = $1"))
            .bind(hash(secret))
            .fetch_optional(&self.inner.read)
            .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    /// Tokens not revoked.
    pub async fn active_tokens(&self) -> anyhow::Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
            .fetch_one(&self.inner.read)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Record that a token was used, without waiting for the commit: bookkeeping must not
    /// slow the request that used it.
    pub fn touch_token(&self, id: &str, at: i64) {
        let id = id.to_string();
        self.inner.writer.submit_detached(Box::new(move |conn| {
            let id = id.clone();
            Box::pin(async move {
                conn.execute(
                    "UPDATE tokens SET last_used_at = $1 WHERE id = $2",
                    params![at, id],
                )
                .await
            })
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "runloom-tokens-{}-{}",
            std::process::id(),
            crate::run::new_id()
        ));
        let url = format!("sqlite://{}", dir.join("t.db").display());
        (
            Store::open(&url, crate::store::Durability::Normal)
                .await
                .unwrap(),
            dir,
        )
    }

    #[tokio::test]
    async fn tokens_are_stored_hashed_verified_by_secret_and_revoked_by_id() {
        let (store, dir) = store().await;
        assert_eq!(store.active_tokens().await.unwrap(), 0);
        let t = store
            .create_token("alertmanager", &["alert".into()])
            .await
            .unwrap();
        assert!(t.secret.starts_with(TOKEN_PREFIX));
        assert_eq!(t.secret.len(), TOKEN_PREFIX.len() + 64);
        let found = store.verify_token(&t.secret).await.unwrap().unwrap();
        assert_eq!(found, t.record);
        assert_eq!(found.scopes, ["alert"]);
        assert!(store.verify_token("rlt_nope").await.unwrap().is_none());
        assert_eq!(store.active_tokens().await.unwrap(), 1);

        // Only the hash is in the database file.
        store.flush().await.unwrap();
        let raw = std::fs::read(dir.join("t.db")).unwrap();
        let wal = std::fs::read(dir.join("t.db-wal")).unwrap_or_default();
        let needle = t.secret.as_bytes();
        for bytes in [&raw, &wal] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }

        store.touch_token(&t.record.id, 42);
        store.flush().await.unwrap();
        let revoked = store.revoke_token(&t.record.id).await.unwrap().unwrap();
        assert_eq!(revoked.last_used_at, Some(42));
        let first = revoked.revoked_at.unwrap();
        let again = store.revoke_token(&t.record.id).await.unwrap().unwrap();
        assert_eq!(again.revoked_at, Some(first), "the first revocation stands");
        assert!(store.revoke_token("nope").await.unwrap().is_none());
        assert_eq!(store.active_tokens().await.unwrap(), 0);
        assert!(
            store
                .verify_token(&t.secret)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_some()
        );
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
