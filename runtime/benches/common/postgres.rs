//! PostgreSQL for the benches: the server named by `RUNLOOM_BENCH_POSTGRES_URL` (or
//! `RUNLOOM_TEST_POSTGRES_URL`), and a fresh database on it per measurement.

use sqlx::{Connection, Executor, PgConnection};

/// The server's URL, if one is configured.
pub(crate) fn base_url() -> Option<String> {
    std::env::var("RUNLOOM_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("RUNLOOM_TEST_POSTGRES_URL"))
        .ok()
}

/// Create an empty database on the server at `base`; returns its URL.
pub(crate) async fn fresh_database(base: &str) -> Result<String, sqlx::Error> {
    let mut conn = PgConnection::connect(base).await?;
    let name = format!(
        "runloom_bench_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database name");
    Ok(format!("{prefix}/{name}"))
}

/// Drop the database at `url` (made by [`fresh_database`]), closing its connections.
pub(crate) async fn drop_database(base: &str, url: &str) {
    let name = url.rsplit_once('/').unwrap().1;
    let mut conn = PgConnection::connect(base).await.unwrap();
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await;
}
