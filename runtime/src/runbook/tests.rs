use super::*;
use crate::config::Config;

fn config() -> Config {
    Config::parse(
        r#"
        version = 1
        [plugins.remediate]
        dirs = ["/var/tmp:/scratch:rw"]
        commands = ["/usr/bin/systemctl restart *"]
        [plugins.notify]
        secrets = ["slack"]
        [secrets.slack]
        env = "SLACK_URL"
        "#,
        Path::new("/etc/runloom/runloom.toml"),
    )
    .unwrap()
}

fn plugins() -> BTreeSet<String> {
    ["remediate", "notify", "disk-check"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Write a runbook directory under a fresh temp dir and load it.
fn load_str(
    name: &str,
    toml: &str,
    body: Option<(&str, &str)>,
) -> Result<Runbook, Vec<DefinitionError>> {
    let root = std::env::temp_dir().join(format!(
        "runloom-rb-{}-{name}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(FILE_NAME), toml).unwrap();
    if let Some((file, text)) = body {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let config = config();
    let plugins = plugins();
    let result = load(
        &dir,
        &LoadContext {
            config: &config,
            plugins: &plugins,
        },
    );
    std::fs::remove_dir_all(&root).unwrap();
    result
}

fn messages(errors: &[DefinitionError]) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let (l, c) = e.position.unwrap_or((0, 0));
            format!("{l}:{c} {}: {}", e.field, e.message)
        })
        .collect()
}

const FULL: &str = r#"
version = 1
description = "Free disk space when DiskSpaceLow fires."
secrets = ["slack"]

[parameters.path]
type = "string"
default = "/scratch"

[parameters.max_age]
type = "duration"
default = "7d"

[parameters.dry]
type = "bool"

[[trigger]]
kind = "alert"
matchers = ['alertname="DiskSpaceLow"', 'severity=~"warning|critical"']
parameters = { path = "{{ labels.mountpoint }}" }

[[trigger]]
kind = "cron"
schedule = "30 3 * * *"
timezone = "Europe/Berlin"
missed = "run-once"
overlap = "queue-one"

[[trigger]]
kind = "webhook"
name = "cleanup"

[[trigger]]
kind = "manual"

[policy]
timeout = "5m"
retries = 2
lock = "{{ labels.instance }}"
rate_limit = "3/1h"
cooldown = "10m"
breaker = 3

[plugins.remediate]
dirs = ["/var/tmp/app:/scratch:ro"]

[plugins.disk-check]

[plugins.notify]
"#;

#[test]
fn a_complete_runbook_resolves_every_field() {
    let rb = load_str("disk-space-low", FULL, Some(("main.rhai", "1"))).unwrap();
    assert_eq!(rb.name, "disk-space-low");
    assert_eq!(rb.body.kind, BodyKind::Rhai);
    assert_eq!(rb.content_hash.len(), 64);
    assert_eq!(rb.parameters.len(), 3);
    assert_eq!(
        rb.parameter("max_age").unwrap().default,
        Some(serde_json::json!("7d"))
    );
    assert_eq!(rb.triggers.len(), 4);
    match &rb.triggers[0] {
        Trigger::Alert(a) => {
            assert_eq!(a.matchers.len(), 2);
            assert!(matches!(a.parameters["path"], ParamSource::Template(_)));
        }
        other => panic!("{other:?}"),
    }
    match &rb.triggers[1] {
        Trigger::Cron(c) => {
            assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
            assert_eq!(
                c.missed,
                Missed::RunOnce {
                    window: Duration::from_secs(3600)
                }
            );
            assert_eq!(c.overlap, Overlap::QueueOne);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rb.policy.timeout, Duration::from_secs(300));
    assert_eq!(rb.policy.retries, 2);
    assert_eq!(
        rb.policy.rate_limit,
        Some(RateLimit {
            count: 3,
            window: Duration::from_secs(3600)
        })
    );
    // The narrowed grant replaces the configured one; other plugins inherit runloom.toml.
    let remediate = &rb.plugins["remediate"].grants;
    assert_eq!(remediate.dirs.len(), 1);
    assert_eq!(remediate.dirs[0].to_string(), "/var/tmp/app:/scratch:ro");
    assert_eq!(remediate.commands.len(), 1, "commands are inherited");
    assert_eq!(rb.plugins["notify"].grants.secrets, ["slack"]);
    assert_eq!(rb.secrets, ["slack"]);
}

#[test]
fn unknown_fields_and_bad_types_name_line_and_field() {
    let errors = load_str(
        "typo",
        "version = 1\ndescription = \"x\"\n[policy]\ntimout = \"5m\"\n",
        Some(("main.rhai", "")),
    )
    .unwrap_err();
    let m = messages(&errors);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(
        m[0].starts_with("4:1 policy.timout: unknown field `timout`"),
        "{m:?}"
    );
}

#[test]
fn every_semantic_error_is_reported_with_its_position() {
    let toml = r#"version = 2
description = "broken"
[parameters.n]
type = "int"
default = "three"
[[trigger]]
kind = "cron"
schedule = "* * *"
timezone = "Mars/Olympus"
[[trigger]]
kind = "alert"
matchers = ['severity=~"("']
parameters = { nope = "x" }
[policy]
timeout = "forever"
rate_limit = "many"
[plugins.ghost]
[plugins.remediate]
dirs = ["/etc:/etc:rw"]
"#;
    let errors = load_str("broken", toml, Some(("main.rhai", ""))).unwrap_err();
    let m = messages(&errors);
    let expect = [
        "1:11 version: `version = 2` is not supported",
        "5:11 parameters.n.default: expected a whole number",
        "8:12 trigger[1].schedule: `* * *` has 3 fields",
        "9:12 trigger[1].timezone: `Mars/Olympus` is not an IANA time zone",
        "12:13 trigger[2].matchers: `severity=~\"(\"`: invalid regular expression",
        "13:16 trigger[2].parameters.nope: unknown parameter `nope`",
        "15:11 policy.timeout: `forever` is not a duration",
        "16:14 policy.rate_limit: `many`: expected `N/WINDOW`",
        "17:10 plugins.ghost: no plugin named `ghost` is loaded",
        "19:8 plugins.remediate.dirs: directory `/etc:/etc:rw` is not granted to plugin `remediate`",
    ];
    for e in expect {
        assert!(
            m.iter().any(|x| x.starts_with(e)),
            "missing `{e}` in {m:#?}"
        );
    }
    assert_eq!(m.len(), expect.len(), "{m:#?}");
}

#[test]
fn a_runbook_needs_a_body() {
    let errors = load_str("nobody", "version = 1\ndescription = \"x\"\n", None).unwrap_err();
    assert_eq!(
        errors[0].to_string().rsplit_once(": `body`: ").unwrap().1,
        "no body: add `main.rhai` or `main.wasm` to the runbook directory, or set `body`"
    );
}

#[test]
fn five_and_six_field_schedules_parse_with_posix_weekdays() {
    assert!(parse_schedule("0 3 * * 0").is_ok(), "Sunday = 0");
    assert!(parse_schedule("0 3 * * 7").is_ok(), "Sunday = 7");
    assert!(parse_schedule("*/10 * * * * *").is_ok(), "seconds first");
    assert!(parse_schedule("@daily").is_ok());
    assert!(parse_schedule("61 * * * *").is_err());
    assert!(
        parse_schedule("* * * * * * *")
            .unwrap_err()
            .contains("has 7 fields")
    );
}

#[test]
fn cli_parameters_parse_by_declared_type() {
    let rb = load_str("disk-space-low", FULL, Some(("main.rhai", "1"))).unwrap();
    let given = rb
        .parse_cli_params(&[
            ("dry".into(), "yes".into()),
            ("max_age".into(), "1h".into()),
        ])
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(given),
        serde_json::json!({"dry": true, "max_age": "1h"})
    );
    let errors = rb
        .parse_cli_params(&[("dry".into(), "maybe".into())])
        .unwrap_err();
    assert_eq!(
        errors,
        ["parameter `dry`: expected true or false, got `maybe`"]
    );
}
