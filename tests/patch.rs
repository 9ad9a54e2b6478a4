//! `patch` against the real `apt-get` of this machine (simulation only) and against stand-in
//! package managers (shell scripts granted like the real ones) for deterministic listing,
//! applying and reboot checks; and the denials when a grant is missing.

use crate::scratch::{ScratchDir, write_executable};
use crate::support::{builtin, host};
use runloom::grant::Grants;
use runloom::plugin::{ActionKind, CallError, CallRequest};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

async fn call(action: &str, input: Value, grants: Grants) -> Result<Value, CallError> {
    let host = host();
    let plugin = builtin(&host, "patch").await;
    let mut req = CallRequest::new(action, input.to_string());
    req.grants = Arc::new(grants);
    host.call(&plugin, req).await.map(|o| o.output)
}

fn commands(grants: &[String]) -> Grants {
    Grants {
        commands: grants.iter().map(|g| g.parse().unwrap()).collect(),
        ..Grants::default()
    }
}

/// A stand-in `apt-get`: `-s upgrade` prints a Debian 12 simulation with two security updates
/// (libssl3, openssl) and one other (bash); applying records its arguments in `calls` and
/// leaves a marker so the next simulation shows what is left.
pub(crate) fn fake_apt(dir: &ScratchDir) -> String {
    let program = dir.join("apt-get");
    let d = dir.path().display();
    write_executable(
        &program,
        &format!(
            r#"#!/bin/sh
echo "$*" >> {d}/calls
case "$*" in
"-s upgrade")
  echo "Reading package lists..."
  echo "The following packages have been kept back:"
  echo "  linux-image-amd64"
  if [ ! -e {d}/upgraded-all ]; then
    if [ ! -e {d}/upgraded-security ]; then
      echo "Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/bookworm-security [amd64])"
      echo "Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/bookworm-security [amd64]) []"
    fi
    echo "Inst bash [5.2.15-2+b2] (5.2.15-2+b7 Debian:12.9/stable [amd64])"
  fi
  ;;
*" install --only-upgrade "*)
  [ -e {d}/locked ] && {{ echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)" >&2; exit 100; }}
  echo "Setting up libssl3:amd64 (3.0.17-1~deb12u2) ..."
  touch {d}/upgraded-security
  ;;
*" upgrade")
  [ -e {d}/locked ] && {{ echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (apt-get)" >&2; exit 100; }}
  touch {d}/upgraded-all
  ;;
*)
  echo "E: unexpected arguments: $*" >&2
  exit 100
  ;;
esac
"#
        ),
    );
    program.display().to_string()
}

/// A stand-in `dnf`: `check-update` exits 100 with three updates, `updateinfo` names two of
/// them in security advisories; `upgrade --security` leaves only the other one pending.
fn fake_dnf(dir: &ScratchDir) -> String {
    let program = dir.join("dnf");
    let d = dir.path().display();
    write_executable(
        &program,
        &format!(
            r#"#!/bin/sh
echo "$*" >> {d}/calls
case "$*" in
"-q check-update")
  echo
  if [ ! -e {d}/upgraded-security ]; then
    echo "kernel.x86_64                         5.14.0-427.16.1.el9_4              baseos"
    echo "openssl-libs.x86_64                   1:3.0.7-27.el9_4                   baseos"
  fi
  echo "tzdata.noarch                         2024a-1.el9                        baseos"
  exit 100
  ;;
"-q updateinfo list --security")
  echo "RLSA-2024:2758 Important/Sec. kernel-5.14.0-427.16.1.el9_4.x86_64"
  echo "RLSA-2024:2447 Moderate/Sec.  openssl-libs-1:3.0.7-27.el9_4.x86_64"
  ;;
"-y upgrade --security")
  touch {d}/upgraded-security
  ;;
*)
  echo "Error: unexpected arguments: $*" >&2
  exit 1
  ;;
esac
"#
        ),
    );
    program.display().to_string()
}

pub(crate) fn calls(dir: &ScratchDir) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn listing_is_a_read_action_and_applying_a_mutate_action() {
    let host = host();
    let plugin = builtin(&host, "patch").await;
    let kinds: Vec<(&str, ActionKind)> = plugin
        .manifest()
        .actions
        .iter()
        .map(|a| (a.name.as_str(), a.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("list-updates", ActionKind::Read),
            ("apply", ActionKind::Mutate),
            ("reboot-required", ActionKind::Read),
        ]
    );
}

#[tokio::test]
async fn the_real_apt_simulation_lists_what_apt_get_reports() {
    let apt_get = Path::new("/usr/bin/apt-get");
    if !apt_get.exists() {
        eprintln!("skipped: this machine has no apt-get");
        return;
    }
    // What apt-get itself says, run the way the engine runs programs.
    let direct = std::process::Command::new(apt_get)
        .args(["-s", "upgrade"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .output()
        .unwrap();
    assert!(direct.status.success());
    let text = String::from_utf8_lossy(&direct.stdout);
    let inst: Vec<&str> = text.lines().filter(|l| l.starts_with("Inst ")).collect();
    let expected: BTreeSet<&str> = inst
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let expected_security: BTreeSet<&str> = inst
        .iter()
        .filter(|l| l.contains("-security"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();

    // No `manager`: apt is detected because its simulation is granted and installed.
    let out = call(
        "list-updates",
        json!({}),
        commands(&["/usr/bin/apt-get -s **".into()]),
    )
    .await
    .unwrap();
    assert_eq!(out["manager"], "apt");
    let updates = out["updates"].as_array().unwrap();
    let listed: BTreeSet<&str> = updates
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    let security: BTreeSet<&str> = updates
        .iter()
        .filter(|u| u["security"] == true)
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(security, expected_security);
    assert_eq!(out["total"], expected.len());
    assert_eq!(out["security"], expected_security.len());
    for u in updates {
        assert!(!u["new_version"].as_str().unwrap().is_empty(), "{u}");
        assert!(!u["arch"].as_str().unwrap().is_empty(), "{u}");
    }
}

#[tokio::test]
async fn apt_updates_from_a_security_suite_are_marked() {
    let dir = ScratchDir::new("patch-apt-list");
    let apt = fake_apt(&dir);
    let out = call(
        "list-updates",
        json!({"manager": "apt", "program": apt}),
        commands(&[format!("{apt} -s upgrade")]),
    )
    .await
    .unwrap();
    assert_eq!(names(&out["updates"]), ["libssl3", "openssl", "bash"]);
    assert_eq!(
        (out["total"].as_u64(), out["security"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(out["updates"][0]["security"], true);
    assert_eq!(out["updates"][0]["current_version"], "3.0.15-1~deb12u1");
    assert_eq!(out["updates"][0]["new_version"], "3.0.17-1~deb12u2");
    assert_eq!(
        out["updates"][0]["origins"],
        json!(["Debian-Security:12/bookworm-security"])
    );
    assert_eq!(out["updates"][2]["security"], false);
    assert_eq!(out["kept_back"], json!(["linux-image-amd64"]));
}

#[tokio::test]
async fn apt_security_only_apply_upgrades_just_the_security_packages() {
    let dir = ScratchDir::new("patch-apt-security");
    let apt = fake_apt(&dir);
    let out = call(
        "apply",
        json!({"manager": "apt", "program": apt, "security_only": true}),
        commands(&[format!("{apt} -s upgrade"), format!("{apt} -y **")]),
    )
    .await
    .unwrap();
    let install = "-y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install --only-upgrade libssl3 openssl";
    assert_eq!(calls(&dir), ["-s upgrade", install, "-s upgrade"]);
    assert_eq!(out["command"], format!("{apt} {install}"));
    assert_eq!(names(&out["upgraded"]), ["libssl3", "openssl"]);
    assert_eq!(out["still_pending"], json!([]));
    assert_eq!(
        (
            out["remaining"].as_u64(),
            out["remaining_security"].as_u64()
        ),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn apt_full_apply_runs_a_noninteractive_upgrade() {
    let dir = ScratchDir::new("patch-apt-all");
    let apt = fake_apt(&dir);
    let out = call(
        "apply",
        json!({"manager": "apt", "program": apt}),
        commands(&[format!("{apt} -s upgrade"), format!("{apt} -y **")]),
    )
    .await
    .unwrap();
    assert_eq!(
        calls(&dir)[1],
        "-y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade"
    );
    assert_eq!(names(&out["upgraded"]), ["libssl3", "openssl", "bash"]);
    assert_eq!(out["remaining"], 0);
}

#[tokio::test]
async fn a_held_dpkg_lock_is_a_retryable_failure() {
    let dir = ScratchDir::new("patch-apt-locked");
    let apt = fake_apt(&dir);
    std::fs::write(dir.join("locked"), "").unwrap();
    let err = call(
        "apply",
        json!({"manager": "apt", "program": apt}),
        commands(&[format!("{apt} -s upgrade"), format!("{apt} -y **")]),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CallError::Retryable(_)), "{err:?}");
    assert!(err.to_string().contains("Could not get lock"), "{err}");
}

#[tokio::test]
async fn applying_needs_more_than_the_simulation_grant() {
    let dir = ScratchDir::new("patch-apt-denied");
    let apt = fake_apt(&dir);
    let err = call(
        "apply",
        json!({"manager": "apt", "program": apt}),
        commands(&[format!("{apt} -s upgrade")]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "plugin `patch` may not run `{apt} -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade`: not granted"
        )
    );
    // Only the simulation ran.
    assert_eq!(calls(&dir), ["-s upgrade"]);
}

#[tokio::test]
async fn without_a_command_grant_listing_is_denied() {
    let err = call("list-updates", json!({}), Grants::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `patch` may not run `/usr/bin/apt-get -s upgrade`: not granted"
    );
}

#[tokio::test]
async fn dnf_security_advisories_mark_updates_and_drive_a_security_upgrade() {
    let dir = ScratchDir::new("patch-dnf");
    let dnf = fake_dnf(&dir);
    let grants = commands(&[format!("{dnf} -q **"), format!("{dnf} -y **")]);
    let list = call(
        "list-updates",
        json!({"manager": "dnf", "program": dnf}),
        grants.clone(),
    )
    .await
    .unwrap();
    assert_eq!(list["manager"], "dnf");
    assert_eq!(
        names(&list["updates"]),
        ["kernel", "openssl-libs", "tzdata"]
    );
    assert_eq!(list["security"], 2);
    assert_eq!(list["updates"][0]["advisories"], json!(["RLSA-2024:2758"]));
    assert_eq!(list["updates"][1]["new_version"], "1:3.0.7-27.el9_4");
    assert_eq!(list["updates"][2]["security"], false);

    let out = call(
        "apply",
        json!({"manager": "dnf", "program": dnf, "security_only": true}),
        grants,
    )
    .await
    .unwrap();
    assert_eq!(out["command"], format!("{dnf} -y upgrade --security"));
    assert_eq!(names(&out["upgraded"]), ["kernel", "openssl-libs"]);
    assert_eq!(
        (
            out["remaining"].as_u64(),
            out["remaining_security"].as_u64()
        ),
        (Some(1), Some(0))
    );
}

#[tokio::test]
async fn debian_reboot_flag_is_read_through_a_granted_directory() {
    let run = ScratchDir::new("patch-run");
    let grants = Grants {
        dirs: vec![
            format!("{}:/var/run:ro", run.path().display())
                .parse()
                .unwrap(),
        ],
        ..Grants::default()
    };
    let out = call("reboot-required", json!({}), grants.clone())
        .await
        .unwrap();
    assert_eq!(
        out,
        json!({"manager": "apt", "reboot_required": false, "reasons": []})
    );
    std::fs::write(
        run.join("reboot-required"),
        "*** System restart required ***\n",
    )
    .unwrap();
    std::fs::write(
        run.join("reboot-required.pkgs"),
        "linux-image-6.1.0-21-amd64\nlibc6\nlibc6\n",
    )
    .unwrap();
    let out = call("reboot-required", json!({}), grants).await.unwrap();
    assert_eq!(out["reboot_required"], true);
    assert_eq!(
        out["reasons"],
        json!(["linux-image-6.1.0-21-amd64", "libc6"])
    );
}

#[tokio::test]
async fn needs_restarting_decides_for_dnf_hosts() {
    let dir = ScratchDir::new("patch-needs-restarting");
    let program = dir.join("needs-restarting");
    write_executable(
        &program,
        "#!/bin/sh\n[ \"$1\" = -r ] || exit 2\necho 'Core libraries or services have been updated since boot-up:'\necho '  * kernel'\necho '  * systemd'\necho\necho 'Reboot is required to fully utilize these updates.'\nexit 1\n",
    );
    let program = program.display().to_string();
    let out = call(
        "reboot-required",
        json!({"needs_restarting": program}),
        commands(&[format!("{program} -r")]),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({"manager": "dnf", "reboot_required": true, "reasons": ["kernel", "systemd"]})
    );
}

#[tokio::test]
async fn the_reboot_flag_outside_every_grant_is_denied() {
    let err = call(
        "reboot-required",
        json!({"manager": "apt"}),
        Grants::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "plugin `patch` may not read `/var/run/reboot-required`: not granted"
    );
}
