//! Whether an archive entry may be restored: its path and, for a symbolic link, its target
//! must stay inside the restore target. Pure and lexical: nothing here touches the disk.
//!
//! Lexical checks are enough because `restore` writes into an empty directory, creates every
//! file and directory before any symbolic link, and refuses to create a link below another
//! link. So the directories an entry's path passes through are real directories, and a link
//! target that starts with some `..` and then only descends (the rule below) resolves inside
//! the target however other links are arranged. A `..` after a name is refused: the name
//! might be a link, and `name/..` would then climb from wherever the link points.

use std::path::{Component, Path, PathBuf};

/// The path, relative to the restore target, that the entry `raw` is written to: `.` parts
/// dropped, anything absolute or containing `..` refused.
pub fn entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for part in raw.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("`{}` contains `..`", raw.display()));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("`{}` is an absolute path", raw.display()));
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(format!("`{}` names no file", raw.display()));
    }
    Ok(out)
}

/// Check that a symbolic link at `link` (relative to the restore target, as returned by
/// [`entry_path`]) pointing at `target` resolves inside the restore target.
pub fn link_target(link: &Path, target: &Path) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "symbolic link `{}` -> `{}` {why}",
            link.display(),
            target.display()
        ))
    };
    if target.as_os_str().is_empty() {
        return refuse("has an empty target");
    }
    // How deep the link's directory lies below the restore target.
    let mut depth = link.parent().map_or(0, |p| p.components().count());
    let mut descended = false;
    for part in target.components() {
        match part {
            Component::RootDir | Component::Prefix(_) => {
                return refuse("points outside the target (absolute)");
            }
            Component::CurDir => {}
            Component::ParentDir if descended => {
                return refuse("has `..` after a name, which could leave the target");
            }
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return refuse("points outside the target"),
            },
            Component::Normal(_) => descended = true,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_are_kept_and_dots_dropped() {
        assert_eq!(
            entry_path(Path::new("etc/app.conf")).unwrap(),
            Path::new("etc/app.conf")
        );
        assert_eq!(
            entry_path(Path::new("./etc/./app.conf")).unwrap(),
            Path::new("etc/app.conf")
        );
        assert_eq!(entry_path(Path::new("dir/")).unwrap(), Path::new("dir"));
    }

    #[test]
    fn parent_components_are_refused_wherever_they_are() {
        for raw in ["../x", "a/../../x", "a/..", "a/b/../c", ".."] {
            let err = entry_path(Path::new(raw)).unwrap_err();
            assert_eq!(err, format!("`{raw}` contains `..`"));
        }
    }

    #[test]
    fn absolute_and_empty_paths_are_refused() {
        assert_eq!(
            entry_path(Path::new("/etc/passwd")).unwrap_err(),
            "`/etc/passwd` is an absolute path"
        );
        assert!(entry_path(Path::new("")).is_err());
        assert!(entry_path(Path::new("./")).is_err());
    }

    #[test]
    fn links_within_the_target_are_allowed() {
        let ok = [
            ("a", "b"),
            ("a", "./b"),
            ("sub/a", "../b"),
            ("sub/a", ".."),
            ("x/y/a", "../../z/w"),
            ("sites-enabled/app", "../sites-available/app"),
            ("a", "sub/deeper/file"),
        ];
        for (link, target) in ok {
            assert!(
                link_target(Path::new(link), Path::new(target)).is_ok(),
                "{link} -> {target}"
            );
        }
    }

    #[test]
    fn links_leaving_the_target_are_refused() {
        let escaping = [
            ("a", "/etc/passwd"),
            ("a", ".."),
            ("a", "../x"),
            ("sub/a", "../../x"),
            ("x/y/a", "../../../z"),
        ];
        for (link, target) in escaping {
            let err = link_target(Path::new(link), Path::new(target)).unwrap_err();
            assert!(err.contains("points outside the target"), "{err}");
        }
    }

    #[test]
    fn parent_components_after_a_name_are_refused() {
        // `r` could be a link to `.`; `r/..` would then be the target's parent.
        let err = link_target(Path::new("y"), Path::new("r/..")).unwrap_err();
        assert_eq!(
            err,
            "symbolic link `y` -> `r/..` has `..` after a name, which could leave the target"
        );
        assert!(link_target(Path::new("sub/y"), Path::new("../r/../x")).is_err());
    }

    #[test]
    fn an_empty_link_target_is_refused() {
        assert!(link_target(Path::new("a"), Path::new("")).is_err());
    }
}
