//! Reload: atomic swaps under load, refused reloads, no-op reloads, table versions (with
//! git), the directory watcher, SIGHUP, and snapshots held across a reload.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use splitmx::{Address, Outcome, ReloadOutcome, Router, RoutingConfig, TableVersion};

/// Recipients listed in every generated table (besides the marker).
const USERS: usize = 50;
/// The table file every test writes.
const TABLE: &str = "example.com.yaml";

/// A table for example.com in which every listed recipient, and the domain default, go to
/// `route_<tag>`, and `marker@example.com` goes to `<tag>_marker`.
///
/// Tag "a": route_a is an smtp route (250), a_marker an smtp route (250).
/// Tag "b": route_b is a defer route (450), b_marker a reject route (550).
fn table(tag: &str) -> String {
    let mut t = String::from("routes:\n");
    match tag {
        "a" => {
            t.push_str("  route_a: \"smtp:[192.0.2.1]:25\"\n");
            t.push_str("  a_marker: \"smtp:[192.0.2.9]:25\"\n");
        }
        "b" => {
            t.push_str("  route_b:\n    defer: \"450 4.2.1 moving to B\"\n");
            t.push_str("  b_marker:\n    reject: \"550 5.1.1 marker of B\"\n");
        }
        "c" => {
            t.push_str("  route_c: \"lmtp:[192.0.2.3]:24\"\n");
            t.push_str("  c_marker: \"lmtp:[192.0.2.3]:24\"\n");
        }
        other => panic!("no table {other}"),
    }
    t.push_str("domains: [example.com]\n");
    t.push_str(&format!("default: route_{tag}\n"));
    t.push_str("recipients:\n");
    for i in 0..USERS {
        t.push_str(&format!("  user{i}@example.com: route_{tag}\n"));
    }
    t.push_str(&format!("  marker@example.com: {tag}_marker\n"));
    t
}

/// An invalid version of table A, with the 1-based line and column of its one error.
/// `unknown_route`: user17 refers to `route_zz`, which no file defines. Otherwise user17's
/// value has an unclosed quote (a YAML syntax error).
fn broken_table(unknown_route: bool) -> (String, usize, usize) {
    let good = table("a");
    let needle = "  user17@example.com: ";
    let bad_value = if unknown_route {
        "route_zz"
    } else {
        "\"route_a"
    };
    let mut line_no = 0;
    let mut column = 0;
    let text: String = good
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if l.starts_with(needle) {
                line_no = i + 1;
                column = needle.len() + 1;
                format!("{needle}{bad_value}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(line_no > 0, "user17 not in table A");
    (text, line_no, column)
}

/// The message expected for `broken_table(unknown_route)`.
fn broken_message(unknown_route: bool) -> &'static str {
    if unknown_route {
        "unknown route 'route_zz' (defined routes: a_marker, route_a)"
    } else {
        "unclosed quote"
    }
}

/// Replace a file the way an editor or deployment tool should: write a hidden temporary
/// file (table loading skips hidden files) and rename it over the old one.
fn write_table(dir: &Path, text: &str) {
    let tmp = dir.join(".reload-test.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(TABLE)).unwrap();
}

fn table_path(dir: &Path) -> String {
    dir.join(TABLE).display().to_string()
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

/// What an SMTP client would see for a recipient: the route name and the reply code.
/// None when the recipient was not routed.
fn answer(outcome: &Outcome) -> Option<(String, u16)> {
    let route = outcome.route()?;
    Some((route.name().to_string(), outcome.reply().code))
}

/// The answer tables of version `tag` give for `rcpt`.
fn expected(tag: &str, rcpt: &str) -> (String, u16) {
    let marker = rcpt.starts_with("marker@");
    match (tag, marker) {
        ("a", false) => ("route_a".into(), 250),
        ("a", true) => ("a_marker".into(), 250),
        ("b", false) => ("route_b".into(), 450),
        ("b", true) => ("b_marker".into(), 550),
        ("c", false) => ("route_c".into(), 250),
        ("c", true) => ("c_marker".into(), 250),
        _ => unreachable!(),
    }
}

/// What the router answers now for `rcpt`, with the version that answered.
fn now(router: &Router, rcpt: &str) -> (Option<(String, u16)>, TableVersion) {
    let r = router.resolve_tables(&addr(rcpt));
    (answer(&r.outcome), (*r.version).clone())
}

/// Poll `cond` until it holds; fail after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn load(dir: &Path) -> Router {
    Router::load(RoutingConfig::new(dir)).unwrap_or_else(|e| panic!("load failed:\n{e}"))
}

fn swapped(outcome: Result<ReloadOutcome, splitmx::ReloadError>) -> (TableVersion, TableVersion) {
    match outcome {
        Ok(ReloadOutcome::Swapped { old, new, .. }) => (old, new),
        other => panic!("expected Swapped, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------

/// Recipients the storm readers resolve: every listed user, the marker, and an unlisted
/// user that takes the domain default.
fn storm_recipients() -> Vec<(String, Address)> {
    let mut v: Vec<String> = (0..USERS).map(|i| format!("user{i}@example.com")).collect();
    v.push("marker@example.com".into());
    v.push("nobody@example.com".into());
    v.into_iter()
        .map(|s| {
            let a = addr(&s);
            (s, a)
        })
        .collect()
}

#[test]
fn reload_storm_never_mixes_snapshots() {
    const READERS: usize = 8;
    const CYCLES: usize = 60; // each: valid, invalid; 120 reloads
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = load(dir.path());
    let hash_a = router.version().hash;
    write_table(dir.path(), &table("b"));
    let (_, b) = swapped(router.reload());
    let hash_b = b.hash;
    assert_ne!(hash_a, hash_b);
    // Tag of a version hash, for the readers.
    let tag_of = |hash: &str| -> Option<&'static str> {
        if hash == hash_a {
            Some("a")
        } else if hash == hash_b {
            Some("b")
        } else {
            None
        }
    };

    let rcpts = storm_recipients();
    let stop = AtomicBool::new(false);
    let resolutions = AtomicU64::new(0);
    let seen_a = AtomicU64::new(0);
    let seen_b = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let failure_log: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let fail = |msg: String| {
        failures.fetch_add(1, Ordering::Relaxed);
        let mut log = failure_log.lock().unwrap();
        if log.len() < 20 {
            log.push(msg);
        }
    };

    let mut swaps = 1u64; // the B reload above
    let mut refused = 0u64;
    let mut reloads = 1u64;
    std::thread::scope(|s| {
        for t in 0..READERS {
            let (router, rcpts, stop) = (&router, &rcpts, &stop);
            let (resolutions, seen_a, seen_b, fail) = (&resolutions, &seen_a, &seen_b, &fail);
            s.spawn(move || {
                let mut i = t * 7;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if i % 4 == 0 {
                        // One SMTP transaction: several RCPTs from one snapshot.
                        let snap = router.snapshot();
                        let hash = &snap.version().hash;
                        let Some(tag) = tag_of(hash) else {
                            fail(format!("snapshot has unknown version {hash}"));
                            continue;
                        };
                        for k in 0..6 {
                            let (text, rcpt) = &rcpts[(i + k * 11) % rcpts.len()];
                            let got = answer(&snap.resolve(rcpt));
                            if got.as_ref() != Some(&expected(tag, text)) {
                                fail(format!(
                                    "snapshot {hash} (table {tag}): {text} -> {got:?} (RCPT {k})"
                                ));
                            }
                        }
                        resolutions.fetch_add(6, Ordering::Relaxed);
                    } else {
                        let (text, rcpt) = &rcpts[i % rcpts.len()];
                        let r = router.resolve_tables(rcpt);
                        resolutions.fetch_add(1, Ordering::Relaxed);
                        let got = answer(&r.outcome);
                        match tag_of(&r.version.hash) {
                            Some(tag) => {
                                if tag == "a" {
                                    seen_a.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    seen_b.fetch_add(1, Ordering::Relaxed);
                                }
                                if got.as_ref() != Some(&expected(tag, text)) {
                                    fail(format!(
                                        "version {} (table {tag}): {text} -> {got:?}",
                                        r.version.hash
                                    ));
                                }
                            }
                            None => {
                                fail(format!("unknown version {}: {text} -> {got:?}", r.version))
                            }
                        }
                    }
                }
            });
        }

        // Let the readers make progress between reloads, so that the storm really
        // interleaves with them.
        let progress = |n: u64| {
            let target = resolutions.load(Ordering::Relaxed) + n;
            wait_for("readers make progress", Duration::from_secs(10), || {
                resolutions.load(Ordering::Relaxed) >= target
            });
        };
        let mut next = "a";
        for cycle in 0..CYCLES {
            // A valid table (alternately A and B).
            write_table(dir.path(), &table(next));
            let before = router.version();
            let (old, new) = swapped(router.reload());
            reloads += 1;
            swaps += 1;
            assert_eq!(old, before, "cycle {cycle}: Swapped.old");
            assert_eq!(tag_of(&new.hash), Some(next), "cycle {cycle}: Swapped.new");
            assert_eq!(router.version(), new);
            progress(200);

            // An invalid table: alternately an unknown route and a YAML syntax error.
            let unknown_route = cycle % 2 == 0;
            let (text, line, column) = broken_table(unknown_route);
            write_table(dir.path(), &text);
            let before = router.version();
            let err = router.reload().expect_err("a broken table must be refused");
            reloads += 1;
            refused += 1;
            assert_eq!(err.kept, before, "cycle {cycle}: ReloadError.kept");
            assert_eq!(
                router.version(),
                before,
                "cycle {cycle}: version after refusal"
            );
            let expected_text = format!(
                "{}:{line}:{column}: {}",
                table_path(dir.path()),
                broken_message(unknown_route)
            );
            assert_eq!(err.errors.to_string(), expected_text, "cycle {cycle}");
            progress(200);

            next = if next == "a" { "b" } else { "a" };
        }
        stop.store(true, Ordering::Relaxed);
    });

    let resolutions = resolutions.load(Ordering::Relaxed);
    println!(
        "storm: {reloads} reloads ({swaps} swapped, {refused} refused), \
         {resolutions} resolutions by {READERS} threads"
    );
    let failure_log = failure_log.into_inner().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "bad answers during the storm, first ones:\n{}",
        failure_log.join("\n")
    );
    assert!(reloads >= 100);
    assert!(
        seen_a.load(Ordering::Relaxed) > 0 && seen_b.load(Ordering::Relaxed) > 0,
        "the readers saw only one table version"
    );
    assert!(resolutions >= 2 * 200 * CYCLES as u64);
    let stats = router.stats();
    assert_eq!(
        (stats.swapped, stats.unchanged, stats.failed),
        (swaps, 0, refused)
    );
    let last = broken_table(false);
    assert_eq!(
        stats.last_error.as_deref(),
        Some(
            format!(
                "{}:{}:{}: {}",
                table_path(dir.path()),
                last.1,
                last.2,
                broken_message(false)
            )
            .as_str()
        )
    );
}

#[test]
fn failed_reload_keeps_serving_old_tables() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = load(dir.path());
    let before = router.version();
    assert_eq!(
        now(&router, "user3@example.com"),
        (Some(expected("a", "user3@")), before.clone())
    );

    // Two mistakes: a route no file defines, and a recipient listed twice (case differs).
    let broken = "routes:
  route_b: \"smtp:[192.0.2.2]:25\"
domains: [example.com]
default: route_b
recipients:
  user3@example.com: route_typo
  bob@example.com: route_b
  Bob@Example.com: route_b
";
    write_table(dir.path(), broken);
    let err = router.reload().expect_err("broken tables must be refused");
    let file = table_path(dir.path());
    assert_eq!(err.kept, before);
    let errors: Vec<String> = err.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        errors,
        [
            format!("{file}:6:22: unknown route 'route_typo' (defined routes: route_b)"),
            format!(
                "{file}:8:3: recipient 'bob@example.com' is defined twice; first at {file}:7:3"
            ),
        ]
    );
    let first = err.errors.iter().next().unwrap();
    assert_eq!(
        (first.file.as_str(), first.line, first.column),
        (file.as_str(), 6, 22)
    );
    assert!(
        err.to_string().starts_with(&format!(
            "routing tables not reloaded, version {before} keeps serving:\n"
        )),
        "{err}"
    );

    // The old tables keep answering, at the old version.
    assert_eq!(router.version(), before);
    for rcpt in [
        "user3@example.com",
        "marker@example.com",
        "nobody@example.com",
    ] {
        assert_eq!(
            now(&router, rcpt),
            (Some(expected("a", rcpt)), before.clone()),
            "{rcpt}"
        );
    }
    let stats = router.stats();
    assert_eq!((stats.swapped, stats.unchanged, stats.failed), (0, 0, 1));
    assert_eq!(stats.last_error, Some(errors.join("\n")));

    // Once fixed, the next reload goes through.
    write_table(dir.path(), &table("b"));
    let (old, new) = swapped(router.reload());
    assert_eq!(old, before);
    assert_eq!(
        now(&router, "user3@example.com"),
        (Some(expected("b", "user3@")), new)
    );
    let stats = router.stats();
    assert_eq!((stats.swapped, stats.unchanged, stats.failed), (1, 0, 1));
}

#[test]
fn reload_without_change_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = load(dir.path());
    let before = router.version();
    let snap = router.snapshot();

    match router.reload() {
        Ok(ReloadOutcome::Unchanged(v)) => assert_eq!(v, before),
        other => panic!("expected Unchanged, got {other:?}"),
    }
    assert_eq!(router.version(), before);
    assert_eq!(router.stats().unchanged, 1);

    // Rewrite the same bytes (a new inode), then touch the file to a later time.
    write_table(dir.path(), &table("a"));
    let later = SystemTime::now() + Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join(TABLE))
        .unwrap()
        .set_modified(later)
        .unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join(TABLE))
            .unwrap()
            .modified()
            .unwrap(),
        later
    );
    match router.reload() {
        Ok(ReloadOutcome::Unchanged(v)) => assert_eq!(v, before),
        other => panic!("expected Unchanged after touch, got {other:?}"),
    }
    assert_eq!(router.version(), before);
    // No new snapshot was swapped in.
    assert!(Arc::ptr_eq(&snap, &router.snapshot()));
    let stats = router.stats();
    assert_eq!((stats.swapped, stats.unchanged, stats.failed), (0, 2, 0));
    assert_eq!(stats.last_error, None);
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn inside_git_work_tree(dir: &Path) -> bool {
    Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(dir)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn table_version_changes_with_content_and_includes_git_commit() {
    // Outside git: a content hash and no commit.
    let plain = tempfile::tempdir().unwrap();
    assert!(
        !inside_git_work_tree(plain.path()),
        "the temporary directory {} is inside a git work tree; set TMPDIR elsewhere",
        plain.path().display()
    );
    write_table(plain.path(), &table("a"));
    let router = load(plain.path());
    let a = router.version();
    assert_eq!(a.commit, None);
    assert_eq!(a.hash.len(), 16, "{a}");
    assert!(a.hash.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
    assert_eq!(a.to_string(), a.hash);

    write_table(plain.path(), &table("b"));
    let (_, b) = swapped(router.reload());
    assert_ne!(b.hash, a.hash);
    assert_eq!(b.commit, None);
    // The hash is of the content: back to A is A's version again.
    write_table(plain.path(), &table("a"));
    let (_, again) = swapped(router.reload());
    assert_eq!(again, a);
    // The same tables elsewhere have the same version.
    let other = tempfile::tempdir().unwrap();
    write_table(other.path(), &table("a"));
    assert_eq!(load(other.path()).version(), a);

    // In a git work tree: the commit checked out.
    let repo = tempfile::tempdir().unwrap();
    let routing: PathBuf = repo.path().join("routing");
    std::fs::create_dir(&routing).unwrap();
    write_table(&routing, &table("a"));
    git(repo.path(), &["init", "-q"]);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "tables A"]);
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let router = load(&routing);
    let v = router.version();
    assert_eq!(v.commit.as_deref(), Some(head.as_str()));
    assert_eq!(v.hash, a.hash, "the hash does not depend on git");
    assert_eq!(v.to_string(), format!("{} (git {})", a.hash, &head[..12]));

    // A new commit with the same tables is a new version (same hash, new commit).
    std::fs::write(repo.path().join("README"), "notes\n").unwrap();
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "readme"]);
    let head2 = git(repo.path(), &["rev-parse", "HEAD"]);
    assert_ne!(head2, head);
    let (old, new) = swapped(router.reload());
    assert_eq!(old, v);
    assert_eq!(
        (new.hash.as_str(), new.commit.as_deref()),
        (a.hash.as_str(), Some(head2.as_str()))
    );

    // A commit that changes the tables changes both.
    write_table(&routing, &table("b"));
    git(repo.path(), &["commit", "-q", "-a", "-m", "tables B"]);
    let head3 = git(repo.path(), &["rev-parse", "HEAD"]);
    let (_, newer) = swapped(router.reload());
    assert_eq!(
        (newer.hash.as_str(), newer.commit.as_deref()),
        (b.hash.as_str(), Some(head3.as_str()))
    );
}

#[test]
fn watcher_reloads_after_quiet_period() {
    let interval = Duration::from_millis(50);
    let debounce = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = Arc::new(load(dir.path()));
    let a = router.version();
    let watcher = router.watch(interval, debounce).unwrap();

    // A valid change is picked up.
    write_table(dir.path(), &table("b"));
    let changed = Instant::now();
    wait_for(
        "the watcher reloads table B",
        Duration::from_secs(10),
        || now(&router, "user1@example.com").0 == Some(expected("b", "user1@")),
    );
    assert!(
        changed.elapsed() >= debounce,
        "reloaded after {:?}, before the directory was quiet for {debounce:?}",
        changed.elapsed()
    );
    let b = router.version();
    assert_ne!(b, a);
    assert_eq!(
        now(&router, "marker@example.com"),
        (Some(expected("b", "marker@")), b.clone())
    );
    assert_eq!(router.stats().swapped, 1);

    // An invalid change is refused: B keeps serving.
    let (broken, line, column) = broken_table(true);
    write_table(dir.path(), &broken);
    wait_for(
        "the watcher tries the broken table",
        Duration::from_secs(10),
        || router.stats().failed == 1,
    );
    assert_eq!(router.version(), b);
    assert_eq!(
        now(&router, "user1@example.com"),
        (Some(expected("b", "user1@")), b.clone())
    );
    assert_eq!(
        router.stats().last_error,
        Some(format!(
            "{}:{line}:{column}: {}",
            table_path(dir.path()),
            broken_message(true)
        ))
    );

    // Dropped, the watcher reloads nothing more.
    drop(watcher);
    write_table(dir.path(), &table("c"));
    std::thread::sleep(debounce + 8 * interval);
    assert_eq!(router.version(), b);
    assert_eq!(
        now(&router, "user1@example.com").0,
        Some(expected("b", "user1@"))
    );
    let stats = router.stats();
    assert_eq!((stats.swapped, stats.unchanged, stats.failed), (1, 0, 1));
    // The change itself was fine: an explicit reload takes it.
    swapped(router.reload());
    assert_eq!(
        now(&router, "user1@example.com").0,
        Some(expected("c", "user1@"))
    );
}

/// `watch()` has returned, so a change made now must be reloaded. (The watcher once took
/// its baseline fingerprint inside the spawned thread, so a change that landed before the
/// thread first ran became the baseline and was never reloaded.) Several watchers, changed
/// in reverse order of starting, make that window likely to be hit.
#[test]
fn watcher_picks_up_change_made_right_after_start() {
    const WATCHERS: usize = 8;
    let dirs: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            write_table(dir.path(), &table("a"));
            dir
        })
        .collect();
    let routers: Vec<Arc<Router>> = dirs.iter().map(|d| Arc::new(load(d.path()))).collect();
    let watchers: Vec<_> = routers
        .iter()
        .map(|r| {
            r.watch(Duration::from_millis(50), Duration::from_millis(100))
                .unwrap()
        })
        .collect();
    for d in dirs.iter().rev() {
        write_table(d.path(), &table("b"));
    }
    let reloaded = || {
        routers
            .iter()
            .filter(|r| now(r, "user1@example.com").0 == Some(expected("b", "user1@")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloaded() < WATCHERS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        reloaded(),
        WATCHERS,
        "watchers that never reloaded a change made right after watch() returned"
    );
    drop(watchers);
}

#[cfg(feature = "signals")]
#[test]
fn sighup_reloads_tables() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = Arc::new(load(dir.path()));
    let a = router.version();
    let handle = splitmx::routing::watch::reload_on_sighup(Arc::clone(&router)).unwrap();

    write_table(dir.path(), &table("b"));
    // Nothing happens without the signal.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(router.version(), a);

    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    wait_for("SIGHUP reloads table B", Duration::from_secs(10), || {
        now(&router, "user1@example.com").0 == Some(expected("b", "user1@"))
    });
    assert_ne!(router.version(), a);
    assert_eq!(router.stats().swapped, 1);
    drop(handle);
}

#[test]
fn open_snapshot_survives_reload() {
    let dir = tempfile::tempdir().unwrap();
    write_table(dir.path(), &table("a"));
    let router = load(dir.path());
    let a = router.version();
    let held = router.snapshot();

    write_table(dir.path(), &table("b"));
    let (_, b) = swapped(router.reload());

    // The held snapshot (an SMTP transaction in progress) still answers from A...
    assert_eq!(**held.version(), a);
    for rcpt in [
        "user0@example.com",
        "marker@example.com",
        "nobody@example.com",
    ] {
        assert_eq!(
            answer(&held.resolve(&addr(rcpt))),
            Some(expected("a", rcpt)),
            "{rcpt}"
        );
        // ... while the router answers from B.
        assert_eq!(
            now(&router, rcpt),
            (Some(expected("b", rcpt)), b.clone()),
            "{rcpt}"
        );
    }
    drop(held);
    assert_eq!(router.version(), b);
}
