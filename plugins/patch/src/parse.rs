//! Parsers for what apt and dnf print. Pure, so they are unit-tested natively against output
//! captured from real hosts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One pending package update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Update {
    /// Package name (`openssl`, `libc6:i386`).
    pub name: String,
    /// Architecture (`amd64`, `x86_64`, `all`, `noarch`).
    pub arch: String,
    /// Installed version, when the package manager says (apt does, `dnf check-update` does not).
    pub current_version: Option<String>,
    /// Version the update installs.
    pub new_version: String,
    /// Where the new version comes from: apt origins (`Debian-Security:12/bookworm-security`)
    /// or the dnf repository (`baseos`).
    pub origins: Vec<String>,
    /// True when the update fixes a security issue: for apt, the new version comes from a
    /// `-security` suite; for dnf, a security advisory names it.
    pub security: bool,
    /// Security advisories that name this update (dnf only: `RHSA-2024:1234`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advisories: Vec<String>,
}

/// What `apt-get -s upgrade` says would happen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AptPlan {
    /// Packages it would upgrade.
    pub updates: Vec<Update>,
    /// Packages with a newer version that `upgrade` holds back (they need new or removed
    /// dependencies; `dist-upgrade` territory).
    pub kept_back: Vec<String>,
}

/// Whether an apt origin (`Label:Version/Archive`, as `apt-get -s` prints it) is a security
/// archive. Debian and Ubuntu name the archive `<suite>-security`; Debian ≤ 10 used
/// `<codename>/updates` with the label `Debian-Security`, so the label counts too.
pub fn apt_origin_is_security(origin: &str) -> bool {
    let archive = origin.rsplit_once('/').map_or("", |(_, a)| a);
    let label = origin.split_once(':').map_or(origin, |(l, _)| l);
    archive.ends_with("-security") || label.to_ascii_lowercase().contains("security")
}

/// One `Inst` line of `apt-get -s`:
/// `Inst bash [5.2.15-2+b2] (5.2.15-2+b7 Debian:12.9/stable, Debian-Security:12/stable-security [amd64])`.
fn parse_apt_inst(line: &str) -> Option<Update> {
    let rest = line.strip_prefix("Inst ")?;
    let (name, rest) = rest.split_once(' ')?;
    let rest = rest.trim_start();
    let (current_version, rest) = match rest.strip_prefix('[') {
        Some(r) => {
            let (current, r) = r.split_once(']')?;
            (Some(current.to_string()), r.trim_start())
        }
        None => (None, rest),
    };
    let inner = rest.strip_prefix('(')?;
    let inner = &inner[..inner.find(')')?];
    let (new_version, rest) = inner.split_once(' ').unwrap_or((inner, ""));
    let (origins, arch) = match rest.rfind('[') {
        Some(open) => {
            let arch = rest[open + 1..].trim_end().trim_end_matches(']');
            (&rest[..open], arch)
        }
        None => (rest, ""),
    };
    let origins: Vec<String> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_string)
        .collect();
    Some(Update {
        name: name.to_string(),
        arch: arch.to_string(),
        current_version,
        new_version: new_version.to_string(),
        security: origins.iter().any(|o| apt_origin_is_security(o)),
        origins,
        advisories: Vec::new(),
    })
}

/// Parse the output of `apt-get -s upgrade` (or `dist-upgrade`).
pub fn parse_apt_simulation(text: &str) -> AptPlan {
    let mut plan = AptPlan::default();
    let mut in_kept_back = false;
    for line in text.lines() {
        if line.starts_with("The following packages have been kept back") {
            in_kept_back = true;
            continue;
        }
        if in_kept_back {
            if line.starts_with(' ') {
                plan.kept_back
                    .extend(line.split_whitespace().map(str::to_string));
                continue;
            }
            in_kept_back = false;
        }
        if let Some(update) = parse_apt_inst(line) {
            plan.updates.push(update);
        }
    }
    plan
}

/// Known RPM architectures, to tell `name.arch` apart from a name with a dot in it.
const RPM_ARCHES: &[&str] = &[
    "x86_64", "noarch", "i686", "i386", "aarch64", "ppc64le", "s390x", "armv7hl", "src",
];

fn split_name_arch(token: &str) -> Option<(&str, &str)> {
    let (name, arch) = token.rsplit_once('.')?;
    (!name.is_empty() && RPM_ARCHES.contains(&arch)).then_some((name, arch))
}

/// Parse the output of `dnf check-update`: `name.arch  version-release  repository` per line.
/// dnf wraps a long `name.arch` onto a line of its own; the rest follows on the next line.
/// Under `Obsoleting Packages`, each replacement is followed by indented lines naming the
/// installed packages it replaces: those are not updates and are skipped, and a replacement
/// already listed above is listed once.
pub fn parse_dnf_check_update(text: &str) -> Vec<Update> {
    let mut updates: Vec<Update> = Vec::new();
    let mut pending: Option<&str> = None;
    let mut obsoletes = false;
    for line in text.lines() {
        if line.starts_with("Obsoleting Packages") {
            obsoletes = true;
            continue;
        }
        if obsoletes && line.starts_with(char::is_whitespace) {
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let row = match (pending.take(), tokens.as_slice()) {
            (None, [package]) if split_name_arch(package).is_some() => {
                pending = Some(package);
                continue;
            }
            (None, [package, version, repo]) => (*package, *version, *repo),
            (Some(package), [version, repo]) => (package, *version, *repo),
            _ => continue,
        };
        let (package, version, repo) = row;
        let Some((name, arch)) = split_name_arch(package) else {
            continue;
        };
        if !version.contains(|c: char| c.is_ascii_digit())
            || updates.iter().any(|u| u.name == name && u.arch == arch)
        {
            continue;
        }
        updates.push(Update {
            name: name.to_string(),
            arch: arch.to_string(),
            current_version: None,
            new_version: version.to_string(),
            origins: vec![repo.to_string()],
            security: false,
            advisories: Vec::new(),
        });
    }
    updates
}

/// The name and architecture of an RPM `name-[epoch:]version-release.arch`.
pub fn split_nevra(nevra: &str) -> Option<(&str, &str)> {
    let (nevr, arch) = split_name_arch(nevra)?;
    let mut parts = nevr.rsplitn(3, '-');
    let (release, version, name) = (parts.next()?, parts.next()?, parts.next()?);
    let ok =
        !release.is_empty() && !name.is_empty() && version.contains(|c: char| c.is_ascii_digit());
    ok.then_some((name, arch))
}

/// Parse `dnf updateinfo list --security` (dnf 4: `ID  Severity/Sec.  NEVRA`; dnf 5 adds
/// columns): the security advisories for each `(name, arch)`.
pub fn parse_dnf_security_advisories(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut advisories: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let [id, rest @ ..] = tokens.as_slice() else {
            continue;
        };
        let Some((name, arch)) = rest.iter().find_map(|t| split_nevra(t)) else {
            continue;
        };
        let ids = advisories
            .entry((name.to_string(), arch.to_string()))
            .or_default();
        if !ids.iter().any(|i| i == id) {
            ids.push((*id).to_string());
        }
    }
    advisories
}

/// Mark the updates that security advisories name.
pub fn mark_security(updates: &mut [Update], advisories: &BTreeMap<(String, String), Vec<String>>) {
    for update in updates {
        if let Some(ids) = advisories.get(&(update.name.clone(), update.arch.clone())) {
            update.security = true;
            update.advisories = ids.clone();
        }
    }
}

/// What `needs-restarting -r` lists as the reasons for a reboot (`  * kernel`).
pub fn parse_needs_restarting(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix("* "))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The packages in `/var/run/reboot-required.pkgs`, once each, in order.
pub fn parse_reboot_required_pkgs(text: &str) -> Vec<String> {
    let mut packages: Vec<String> = Vec::new();
    for name in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !packages.iter().any(|p| p == name) {
            packages.push(name.to_string());
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `apt-get -s upgrade` on Debian 12 (trimmed).
    const APT_SIMULATION: &str = "\
NOTE: This is only a simulation!
      apt-get needs root privileges for real execution.
      Keep also in mind that locking is deactivated,
      so don't depend on the relevance to the real current situation!
Reading package lists...
Building dependency tree...
Reading state information...
Calculating upgrade...
The following packages have been kept back:
  linux-image-amd64 linux-headers-amd64
The following packages will be upgraded:
  base-files bash libssl3 openssl python3-jwt
5 upgraded, 0 newly installed, 0 to remove and 2 not upgraded.
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst bash [5.2.15-2+b8] (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security [amd64]) []
Inst python3-jwt [2.6.0-1] (2.6.0-1+deb12u1 Debian:12.15/oldstable, Debian-Security:12/oldstable-security [all])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Conf bash (5.2.15-2+b13 Debian:12.15/oldstable [amd64])
Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/oldstable-security [amd64])
";

    #[test]
    fn apt_simulation_lists_updates_and_marks_security_suites() {
        let plan = parse_apt_simulation(APT_SIMULATION);
        assert_eq!(plan.kept_back, ["linux-image-amd64", "linux-headers-amd64"]);
        let names: Vec<(&str, bool)> = plan
            .updates
            .iter()
            .map(|u| (u.name.as_str(), u.security))
            .collect();
        assert_eq!(
            names,
            [
                ("base-files", false),
                ("bash", false),
                ("libssl3", true),
                ("openssl", true),
                ("python3-jwt", true),
            ]
        );
        let jwt = &plan.updates[4];
        assert_eq!(jwt.current_version.as_deref(), Some("2.6.0-1"));
        assert_eq!(jwt.new_version, "2.6.0-1+deb12u1");
        assert_eq!(jwt.arch, "all");
        assert_eq!(
            jwt.origins,
            [
                "Debian:12.15/oldstable",
                "Debian-Security:12/oldstable-security"
            ]
        );
    }

    #[test]
    fn apt_origins_from_ubuntu_and_old_debian_count_as_security() {
        assert!(apt_origin_is_security("Ubuntu:22.04/jammy-security"));
        assert!(apt_origin_is_security(
            "UbuntuESMApps:22.04/jammy-apps-security"
        ));
        assert!(apt_origin_is_security("Debian-Security:10/oldstable"));
        assert!(!apt_origin_is_security("Ubuntu:22.04/jammy-updates"));
        assert!(!apt_origin_is_security("Debian:12.15/oldstable"));
        assert!(!apt_origin_is_security("local"));
    }

    #[test]
    fn apt_inst_lines_without_a_current_version_or_origin_parse() {
        let plan = parse_apt_simulation("Inst newpkg (1.0-1 [amd64])\n");
        assert_eq!(plan.updates.len(), 1);
        let u = &plan.updates[0];
        assert_eq!(
            (
                u.name.as_str(),
                u.current_version.as_deref(),
                u.new_version.as_str()
            ),
            ("newpkg", None, "1.0-1")
        );
        assert!(u.origins.is_empty());
        assert!(!u.security);
    }

    #[test]
    fn an_up_to_date_apt_host_has_no_updates() {
        let text = "Reading package lists...\nBuilding dependency tree...\nReading state information...\nCalculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        assert_eq!(parse_apt_simulation(text), AptPlan::default());
    }

    /// Shaped like `dnf check-update` on Rocky Linux 9, including a wrapped long name and the
    /// obsoletes section.
    const DNF_CHECK_UPDATE: &str = "\
Last metadata expiration check: 0:41:12 ago on Tue 14 May 2024 09:12:33 AM UTC.

kernel.x86_64                         5.14.0-427.16.1.el9_4              baseos
openssl-libs.x86_64                   1:3.0.7-27.el9_4                   baseos
python3-setuptools-wheel.noarch       53.0.0-12.el9_4.1                  baseos
NetworkManager-cloud-setup-extra-long-name.x86_64
                                      1:1.46.0-8.el9_4                   appstream
Obsoleting Packages
kernel.x86_64                         5.14.0-427.16.1.el9_4              baseos
    kernel.x86_64                     5.14.0-362.8.1.el9_3               @baseos
grub2-tools-efi.x86_64                1:2.06-80.el9_4                    baseos
    grub2-tools.x86_64                1:2.06-77.el9                      @baseos
";

    const DNF_UPDATEINFO: &str = "\
Last metadata expiration check: 0:41:12 ago on Tue 14 May 2024 09:12:33 AM UTC.
RLSA-2024:2758 Important/Sec. kernel-5.14.0-427.16.1.el9_4.x86_64
RLSA-2024:2447 Moderate/Sec.  openssl-libs-1:3.0.7-27.el9_4.x86_64
RLSA-2024:2999 Important/Sec. kernel-5.14.0-427.16.1.el9_4.x86_64
RLSA-2024:2998 Low/Sec.       notinstalled-1.0-1.el9.x86_64
";

    #[test]
    fn dnf_check_update_lists_updates_including_wrapped_lines() {
        let updates = parse_dnf_check_update(DNF_CHECK_UPDATE);
        let rows: Vec<(&str, &str, &str, &str)> = updates
            .iter()
            .map(|u| {
                (
                    u.name.as_str(),
                    u.arch.as_str(),
                    u.new_version.as_str(),
                    u.origins[0].as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("kernel", "x86_64", "5.14.0-427.16.1.el9_4", "baseos"),
                ("openssl-libs", "x86_64", "1:3.0.7-27.el9_4", "baseos"),
                (
                    "python3-setuptools-wheel",
                    "noarch",
                    "53.0.0-12.el9_4.1",
                    "baseos"
                ),
                (
                    "NetworkManager-cloud-setup-extra-long-name",
                    "x86_64",
                    "1:1.46.0-8.el9_4",
                    "appstream"
                ),
                ("grub2-tools-efi", "x86_64", "1:2.06-80.el9_4", "baseos"),
            ]
        );
    }

    #[test]
    fn dnf_security_advisories_mark_their_updates() {
        let mut updates = parse_dnf_check_update(DNF_CHECK_UPDATE);
        let advisories = parse_dnf_security_advisories(DNF_UPDATEINFO);
        mark_security(&mut updates, &advisories);
        let marked: Vec<(&str, bool, Vec<String>)> = updates
            .iter()
            .map(|u| (u.name.as_str(), u.security, u.advisories.clone()))
            .collect();
        assert_eq!(
            marked,
            [
                (
                    "kernel",
                    true,
                    vec!["RLSA-2024:2758".to_string(), "RLSA-2024:2999".to_string()]
                ),
                ("openssl-libs", true, vec!["RLSA-2024:2447".to_string()]),
                ("python3-setuptools-wheel", false, vec![]),
                ("NetworkManager-cloud-setup-extra-long-name", false, vec![]),
                ("grub2-tools-efi", false, vec![]),
            ]
        );
    }

    #[test]
    fn nevra_splits_into_name_and_arch() {
        assert_eq!(
            split_nevra("openssl-libs-1:3.0.7-27.el9_4.x86_64"),
            Some(("openssl-libs", "x86_64"))
        );
        assert_eq!(
            split_nevra("python3-pip-wheel-21.2.3-8.el9.noarch"),
            Some(("python3-pip-wheel", "noarch"))
        );
        assert_eq!(split_nevra("Important/Sec."), None);
        assert_eq!(split_nevra("kernel.x86_64"), None);
    }

    #[test]
    fn needs_restarting_reasons_are_the_starred_lines() {
        let text = "Core libraries or services have been updated since boot-up:\n  * kernel\n  * systemd\n\nReboot is required to fully utilize these updates.\nMore information: https://access.redhat.com/solutions/27943\n";
        assert_eq!(parse_needs_restarting(text), ["kernel", "systemd"]);
        assert!(parse_needs_restarting("No core libraries or services have been updated since boot-up.\nReboot should not be necessary.\n").is_empty());
    }

    #[test]
    fn reboot_required_packages_are_listed_once() {
        assert_eq!(
            parse_reboot_required_pkgs("linux-image-6.1.0-21-amd64\nlibc6\nlibc6\n\n"),
            ["linux-image-6.1.0-21-amd64", "libc6"]
        );
    }
}
