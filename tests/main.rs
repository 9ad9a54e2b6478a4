//! End-to-end tests, one binary. Each module pins one area's behaviour with real parts:
//! WebAssembly components built from this repository, SQLite files, HTTP on 127.0.0.1.

mod support;

mod hostile;
mod plugin_host;
