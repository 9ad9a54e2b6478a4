//! The baseline for alert intake: a minimal webhook receiver that works the way process-based
//! runbook tools do. It is Python's standard library only (`http.server`, `sqlite3`,
//! `subprocess`): each notification's alerts are stored in SQLite (WAL, `synchronous=FULL`,
//! committed before the 200, as Runloom's intake does), queued, and a pool of worker threads
//! spawns one process per alert for the action, recording when each started and ended.

use super::server::Server;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The receiver. Argument: a JSON object with `db` (SQLite file), `action` (argv; `{url}` is
/// replaced by `done_url` + the alert's fingerprint) and `workers`.
const RECEIVER: &str = r#"
import json, queue, sqlite3, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

conf = json.loads(sys.argv[1])
db = sqlite3.connect(conf["db"], check_same_thread=False, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS alerts (fingerprint TEXT PRIMARY KEY, labels TEXT, "
           "received_at INTEGER, started_at INTEGER, ended_at INTEGER, exit_code INTEGER)")
lock = threading.Lock()
work = queue.Queue()

def ms():
    return int(time.time() * 1000)

def write(sql, args):
    with lock:
        db.execute("BEGIN IMMEDIATE")
        cur = db.execute(sql, args)
        db.execute("COMMIT")
        return cur.rowcount

def worker():
    while True:
        fp = work.get()
        write("UPDATE alerts SET started_at = ? WHERE fingerprint = ?", (ms(), fp))
        argv = [a.replace("{url}", conf["done_url"] + fp) for a in conf["action"]]
        code = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode
        write("UPDATE alerts SET ended_at = ?, exit_code = ? WHERE fingerprint = ?", (ms(), code, fp))

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.answer(200, {"status": "ok"})

    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        new = []
        now = ms()
        with lock:
            db.execute("BEGIN IMMEDIATE")
            for alert in doc["alerts"]:
                fp = alert["fingerprint"]
                cur = db.execute("INSERT OR IGNORE INTO alerts (fingerprint, labels, received_at) "
                                 "VALUES (?, ?, ?)", (fp, json.dumps(alert["labels"]), now))
                if cur.rowcount:
                    new.append(fp)
            db.execute("COMMIT")
        for fp in new:
            work.put(fp)
        self.answer(200, {"stored": len(new)})

    def log_message(self, *args):
        pass

for _ in range(conf["workers"]):
    threading.Thread(target=worker, daemon=True).start()
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer.daemon_threads = True
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print("baseline receiver listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A running baseline receiver.
pub(crate) struct PythonReceiver {
    /// The process.
    pub(crate) server: Server,
    /// Its SQLite file.
    db: PathBuf,
}

impl PythonReceiver {
    /// Spawn it with `python` in `dir`, running `action` once per alert (`{url}` in it becomes
    /// `done_url` + the fingerprint) on `workers` threads. Not yet ready: see [`Server::ready`].
    pub(crate) fn spawn(
        python: &str,
        dir: &Path,
        action: &[String],
        done_url: &str,
        workers: usize,
    ) -> PythonReceiver {
        std::fs::create_dir_all(dir).unwrap();
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        let db = dir.join("alerts.db");
        let conf = serde_json::json!({
            "db": db,
            "action": action,
            "done_url": done_url,
            "workers": workers,
        });
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(conf.to_string())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
        PythonReceiver {
            server: Server::spawn(command),
            db,
        }
    }

    /// `http://…/` for notifications (the receiver answers any path).
    pub(crate) fn url(&self) -> String {
        format!("{}/hooks/alertmanager", self.server.base())
    }

    /// When each alert's action process was started, Unix ms, by fingerprint; panics unless
    /// every action exited 0.
    pub(crate) async fn started_ms(&self) -> HashMap<String, i64> {
        use sqlx::{Connection, SqliteConnection};
        let mut conn = SqliteConnection::connect(&format!("sqlite://{}", self.db.display()))
            .await
            .unwrap();
        let rows: Vec<(String, Option<i64>, Option<i64>)> =
            sqlx::query_as("SELECT fingerprint, started_at, exit_code FROM alerts")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        rows.into_iter()
            .filter_map(|(fp, started, code)| {
                assert!(matches!(code, Some(0) | None), "the action for {fp} failed");
                Some((fp, started?))
            })
            .collect()
    }
}

/// The shell column's action: a shell running `curl` on the URL, as a shell step would.
pub(crate) fn shell_action(curl: &str) -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{curl} -sf -o /dev/null \"$0\""),
        "{url}".into(),
    ]
}

/// The Python column's action: a Python process fetching the URL, as a Python action runner
/// would start one per action.
pub(crate) fn python_action(python: &str) -> Vec<String> {
    vec![
        python.into(),
        "-c".into(),
        "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()".into(),
        "{url}".into(),
    ]
}
