//! The GitOps CLI in a team's pipeline, through the binary: a fresh clone, two runs at once, a
//! planted link, a key removed from git, ObserveOnly, paths that are not manifests, the demo.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;
use support::process::keyward;
use support::{Answers, Cms};

const READER: &str = "corporate.cms-reader.yaml";
const WRITER: &str = "corporate.cms-contact-writer.yaml";

/// A reference CMS with the APIs of example 01, and a work directory holding the example.
async fn setup() -> (Cms, tempfile::TempDir) {
    let cms = Cms::start().await;
    cms.api("blog").await;
    cms.api("contact").await;
    let work = tempfile::tempdir().unwrap();
    let example = support::examples().join("01-read-only-with-contact-form/policy.yaml");
    std::fs::copy(example, work.path().join("policy.yaml")).unwrap();
    (cms, work)
}

/// `keyward plan|apply -f policy.yaml ARGS` against `cms`.
fn run(cms: &Cms, work: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec![args[0], "-f", "policy.yaml"];
    all.extend(&args[1..]);
    let (code, out, err, _) = keyward(
        work,
        &all,
        &[
            ("KEYWARD_CMS_URL", cms.url.as_str()),
            ("KEYWARD_CMS_TOKEN", support::ADMIN),
        ],
    );
    (code, out, err)
}

fn value(dir: &Path, file: &str) -> String {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    let s: k8s_openapi::api::core::v1::Secret = serde_yaml_ng::from_str(&text).unwrap();
    let bytes = &s.data.unwrap()["CMS_API_KEY"];
    String::from_utf8(bytes.0.clone()).unwrap()
}

/// The CMS's keys as (id, version) pairs: unchanged means nothing was regenerated.
async fn key_versions(cms: &Cms) -> Vec<(String, String)> {
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body["keys"].clone();
    let mut out: Vec<(String, String)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].to_string(), k.to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_clone_never_regenerates_every_key() {
    let (cms, work) = setup().await;
    let w = work.path();
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{out}{err}");
    let (reader, writer) = (value(&w.join("out"), READER), value(&w.join("out"), WRITER));
    let before = key_versions(&cms).await;

    // A fresh clone: no secrets directory. plan says what apply would do, and exits 2.
    let (code, out, err) = run(&cms, w, &["plan", "--secrets-dir", "fresh"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("warning: the secrets directory fresh does not exist: 2 keys that the CMS already holds would get a new value")
            && err.contains("apply refuses this without --regenerate-missing"),
        "{err}"
    );
    // apply refuses, changes nothing, and leaves no directory behind.
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "fresh"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the secrets directory fresh does not exist: 2 keys")
            && err.contains("Nothing was changed")
            && err.contains("--regenerate-missing"),
        "{err}"
    );
    assert!(!w.join("fresh").exists());
    // An empty directory is the same.
    std::fs::create_dir(w.join("empty")).unwrap();
    let (code, _, err) = run(&cms, w, &["apply", "--secrets-dir", "empty"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the secrets directory empty holds no Secret files"),
        "{err}"
    );
    assert_eq!(key_versions(&cms).await, before, "nothing regenerated");
    for v in [&reader, &writer] {
        assert!(!err.contains(v.as_str()));
    }

    // Said explicitly: new values, and the old ones keep working for the overlap (the reader
    // declares none: the default 15m; the writer 10m).
    let (code, out, err) = run(
        &cms,
        w,
        &["apply", "--secrets-dir", "fresh", "--regenerate-missing"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("old value valid 900s more"), "{out}");
    let fresh = w.join("fresh");
    assert_ne!(value(&fresh, READER), reader);
    for v in [&reader, &value(&fresh, READER)] {
        assert_eq!(
            cms.status(Method::GET, "/api/blog", v).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &writer).await,
        StatusCode::CREATED
    );

    // One file missing from a directory that holds the others: a lost Secret, regenerated.
    std::fs::remove_file(fresh.join(READER)).unwrap();
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "fresh"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(fresh.join(READER).exists());

    // A file that does not parse is an error naming it, never "missing".
    std::fs::write(fresh.join(READER), "data: [not a secret").unwrap();
    let before = key_versions(&cms).await;
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "fresh"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "Secret corporate/cms-reader: fresh/{READER} is not a Secret manifest (line 1); fix or remove the file"
        )),
        "{err}"
    );
    assert_eq!(key_versions(&cms).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_apply_per_secrets_directory() {
    let (cms, work) = setup().await;
    let w = work.path();
    let out_dir = w.join("out");
    let held = keyward::dirlock::lock(&out_dir, "secrets directory", Default::default()).unwrap();
    let (code, out, err) = run(
        &cms,
        w,
        &["apply", "--secrets-dir", "out", "--lock-timeout", "0s"],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "secrets directory out is in use by pid {}",
            std::process::id()
        )),
        "{err}"
    );
    assert!(!out_dir.join(READER).exists(), "the loser wrote nothing");
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"],
        serde_json::json!([])
    );
    // With time to wait, it waits (saying for what), then goes ahead.
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(1));
        drop(held);
    });
    let (code, out, err) = run(
        &cms,
        w,
        &["apply", "--secrets-dir", "out", "--lock-timeout", "30s"],
    );
    release.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("waiting for the lock on the secrets directory"),
        "{err}"
    );
    assert!(out_dir.join(READER).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_are_private_and_never_written_through_a_planted_link() {
    use std::os::unix::fs::PermissionsExt;
    let (cms, work) = setup().await;
    let w = work.path();
    std::fs::create_dir(w.join("out")).unwrap();
    std::fs::write(w.join("victim"), "untouched").unwrap();
    std::os::unix::fs::symlink(
        w.join("victim"),
        w.join("out").join(format!("{READER}.tmp")),
    )
    .unwrap();
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(w.join("victim")).unwrap(),
        "untouched"
    );
    let names: Vec<String> = std::fs::read_dir(w.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // A directory keyward creates is 0700, its files 0600.
    let (code, _, err) = run(
        &cms,
        w,
        &[
            "apply",
            "--secrets-dir",
            "new/secrets",
            "--regenerate-missing",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.join("new/secrets")), 0o700);
    assert_eq!(mode(&w.join("new/secrets").join(READER)), 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_secret_file_is_deleted_and_only_that() {
    let (cms, work) = setup().await;
    let w = work.path();
    let (code, _, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{err}");
    let writer = value(&w.join("out"), WRITER);
    // Someone else's file in the directory stays.
    std::fs::write(
        w.join("out/other.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: corporate}\n",
    )
    .unwrap();
    // The contact-form key is removed from git.
    let text = std::fs::read_to_string(w.join("policy.yaml")).unwrap();
    let cut = text.find("    - name: contact-form").unwrap();
    std::fs::write(w.join("policy.yaml"), &text[..cut]).unwrap();
    let (code, out, err) = run(&cms, w, &["plan", "--secrets-dir", "out"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!(
            "  - secret   corporate/cms-contact-writer (out/{WRITER}): its key "
        )),
        "{out}"
    );
    let (_, json, _) = run(&cms, w, &["plan", "--secrets-dir", "out", "-o", "json"]);
    let json: Value = serde_json::from_str(&json).unwrap();
    let files = &json["connections"][0]["secretFilesToDelete"];
    assert_eq!(files.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(files[0]["name"], "cms-contact-writer");
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!w.join("out").join(WRITER).exists());
    assert!(w.join("out").join(READER).exists() && w.join("out/other.yaml").exists());
    assert_eq!(
        cms.status(Method::POST, "/api/contact", &writer).await,
        StatusCode::UNAUTHORIZED
    );
    let (code, out, _) = run(&cms, w, &["plan", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{out}");
    // --prune: a policy deleted from git loses its keys and their files.
    std::fs::write(w.join("policy.yaml"), "").unwrap();
    std::fs::write(w.join("other-policy.yaml"), OTHER).unwrap();
    let (code, out, err, _) = keyward(
        w,
        &[
            "apply",
            "-f",
            "other-policy.yaml",
            "--secrets-dir",
            "out",
            "--prune",
        ],
        &[
            ("KEYWARD_CMS_URL", cms.url.as_str()),
            ("KEYWARD_CMS_TOKEN", support::ADMIN),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  - secret   corporate/cms-reader"), "{out}");
    assert!(!w.join("out").join(READER).exists());
}

/// The Secret files of keys an apply revoked go even when the apply stops after them, and a
/// file left by an earlier run (its key revoked, then the run stopped) is listed by the next
/// plan and deleted by the next apply. Before, both stayed, holding dead values, and no plan
/// said so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_keys_revoked_before_a_failure_go_and_later_plans_list_leftovers() {
    use support::proxy::{Fault, Proxy};
    let (cms, work) = setup().await;
    let w = work.path();
    let (code, _, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{err}");
    // Both keys removed from git; the first revoke goes through, every later one fails.
    let text = std::fs::read_to_string(w.join("policy.yaml")).unwrap();
    let cut = text.find("  keys:").unwrap();
    std::fs::write(
        w.join("policy.yaml"),
        format!("{}  keys: []\n", &text[..cut]),
    )
    .unwrap();
    let deletes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = deletes.clone();
    let proxy = Proxy::start(&cms.url, move |c| {
        let revoke = *c.method == Method::DELETE && c.path.starts_with("/v1/keys/");
        (revoke && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 1)
            .then_some(Fault::Answer(500, None))
    })
    .await;
    let (code, out, err, _) = keyward(
        w,
        &["apply", "-f", "policy.yaml", "--secrets-dir", "out"],
        &[
            ("KEYWARD_CMS_URL", proxy.url.as_str()),
            ("KEYWARD_CMS_TOKEN", support::ADMIN),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    let left: Vec<bool> = [READER, WRITER]
        .iter()
        .map(|f| w.join("out").join(f).exists())
        .collect();
    assert_eq!(
        left.iter().filter(|x| **x).count(),
        1,
        "the revoked key's file went, the other's stays: {left:?}"
    );
    // A run that stopped before deleting a revoked key's file: revoke the other key by hand,
    // as an earlier run would have, and the next plan lists its file.
    let keys = cms.admin(Method::GET, "/v1/keys", None).await.body;
    let id = keys["keys"][0]["id"].as_str().unwrap().to_owned();
    let r = cms
        .admin(Method::DELETE, &format!("/v1/keys/{id}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let (code, out, err) = run(&cms, w, &["plan", "--secrets-dir", "out"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains(&format!("its key {id} no longer exists in the CMS")),
        "{out}"
    );
    let (code, out, err) = run(&cms, w, &["apply", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!w.join("out").join(READER).exists() && !w.join("out").join(WRITER).exists());
    let (code, out, _) = run(&cms, w, &["plan", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "nothing left: {out}");
}

const OTHER: &str = "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: other, namespace: corporate}
spec:
  keys:
    - name: k
      defaultPermissions: [GET]
      secret: {name: other-key}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_only_changes_are_pending_for_plan_and_apply() {
    let (cms, work) = setup().await;
    let w = work.path();
    let text = std::fs::read_to_string(w.join("policy.yaml")).unwrap();
    let text = text.replace("spec:\n", "spec:\n  managementPolicy: ObserveOnly\n");
    std::fs::write(w.join("policy.yaml"), text).unwrap();
    for mode in ["plan", "apply"] {
        let (code, out, err) = run(&cms, w, &[mode, "--secrets-dir", "out"]);
        assert_eq!(code, 2, "{mode}: {out}{err}");
        assert!(!out.contains("no changes"), "{out}");
        assert!(
            out.contains("nothing to apply; 2 ObserveOnly changes left for a person."),
            "{out}"
        );
    }
    assert_eq!(
        cms.admin(Method::GET, "/v1/keys", None).await.body["keys"],
        serde_json::json!([])
    );
}

#[test]
fn paths_that_are_not_manifests_are_clear_errors() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let plan = |path: &str| {
        let (code, out, err, _) = keyward(w, &["plan", "-f", path], &[]);
        (code, out, err)
    };
    let (code, _, err) = plan("nope.yaml");
    assert_eq!(code, 1);
    assert!(
        err.contains("nope.yaml: no such file or directory") && !err.contains("nope.yaml:1"),
        "{err}"
    );
    std::fs::create_dir(w.join("empty")).unwrap();
    std::fs::write(w.join("empty/README.md"), "not a manifest").unwrap();
    let (code, _, err) = plan("empty");
    assert_eq!(code, 1);
    assert!(
        err.contains("empty: no manifests here (no .yaml or .yml files)"),
        "{err}"
    );
    let (code, _, err) = plan("/dev/zero");
    assert_eq!(code, 1);
    assert!(
        err.contains("/dev/zero: not a regular file or a directory"),
        "{err}"
    );
    std::os::unix::fs::symlink("b.yaml", w.join("a.yaml")).unwrap();
    std::os::unix::fs::symlink("a.yaml", w.join("b.yaml")).unwrap();
    let (code, _, err) = plan("a.yaml");
    assert_eq!(code, 1);
    assert!(err.contains("a.yaml: cannot read: "), "{err}");
    // A directory that links back into itself is read once, not forever.
    std::fs::create_dir(w.join("tree")).unwrap();
    std::fs::write(w.join("tree/p.yaml"), OTHER).unwrap();
    std::os::unix::fs::symlink(w.join("tree"), w.join("tree/again")).unwrap();
    let (code, _, err) = plan("tree");
    assert_eq!(code, 1);
    assert!(err.contains("tree/again: leads back to "), "{err}");
    // -o is documented.
    let (_, help, _, _) = keyward(w, &["plan", "--help"], &[]);
    assert!(
        help.contains("-o, --output <OUTPUT>") && help.contains("for tools (json, yaml"),
        "{help}"
    );
}

#[test]
fn the_demo_leaves_nothing_behind_and_ends_quietly_when_its_reader_goes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["cms", "demo"])
        .current_dir(work.path())
        .env_remove("KEYWARD_CMS_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `keyward cms demo | head -1`: read a line, then close the pipe.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(
        first.starts_with("reference CMS on http://127.0.0.1:"),
        "{first}"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("panicked") && stderr.is_empty(),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left {left:?}");
    // Its data was in a temporary directory, removed.
    let dir = first
        .trim_end()
        .rsplit_once("(data in ")
        .map(|(_, d)| d.trim_end_matches(')').to_owned())
        .unwrap();
    assert!(!Path::new(&dir).exists(), "{dir} is still there");
}

#[test]
fn json_output_names_no_random_port_for_the_embedded_cms() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("p.yaml"), OTHER).unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml", "-o", "json"], &[]);
    assert_eq!(code, 2, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["connections"][0]["endpoint"], "http://127.0.0.1:8780");
}

#[test]
fn names_that_could_collide_are_refused_and_every_key_shows_its_namespace() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let policy = |ns: &str, name: &str, key: &str| {
        format!("apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: {name}{ns}}}\nspec:\n  keys:\n    - name: {key}\n      defaultPermissions: [GET]\n      secret: {{name: {name}-{key}}}\n")
    };
    // Both would be the CMS key `shop.web.front.reader`.
    std::fs::write(
        w.join("a.yaml"),
        policy(", namespace: shop", "web.front", "reader"),
    )
    .unwrap();
    std::fs::write(
        w.join("b.yaml"),
        policy(", namespace: shop", "web", "front.reader"),
    )
    .unwrap();
    let (code, _, err, _) = keyward(w, &["plan", "-f", "a.yaml", "-f", "b.yaml"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "ApiKeyPolicy shop/web: spec.keys[0].name: 'front.reader' is not a valid key name"
        ),
        "{err}"
    );
    // No namespace: `default`, as kubectl does, and the plan says so.
    std::fs::write(w.join("c.yaml"), policy("", "site", "reader")).unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "c.yaml"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        out.contains("+ create   default/site/reader  -> Secret default/site-reader"),
        "{out}"
    );
}

/// Every directory a README command writes to is ignored by git (a committed Secret file would
/// leak a key).
#[test]
fn gitignore_covers_what_the_readme_commands_create() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // Git and image builds alike leave out what the commands create (values, databases).
    for file in [".gitignore", ".dockerignore"] {
        let ignored: Vec<String> = std::fs::read_to_string(root.join(file))
            .unwrap()
            .lines()
            .map(|l| {
                l.trim()
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .to_owned()
            })
            .collect();
        let covered = |top: &str| {
            ignored.iter().any(|pattern| {
                pattern == top
                    || pattern
                        .strip_suffix('*')
                        .is_some_and(|p| top.starts_with(p))
            })
        };
        let mut checked = 0;
        for flag in ["--secrets-dir ", "--data-dir ", "--data "] {
            for (at, _) in readme.match_indices(flag) {
                let path = readme[at + flag.len()..]
                    .split(|c: char| c.is_whitespace() || c == '`' || c == ')' || c == ']')
                    .next()
                    .unwrap_or_default();
                let top = path
                    .trim_start_matches("./")
                    .split('/')
                    .next()
                    .unwrap_or_default();
                if top.is_empty() || top.chars().all(|c| c.is_ascii_uppercase()) {
                    continue; // a placeholder such as DIR
                }
                assert!(
                    covered(top),
                    "{top} (from `{flag}{path}` in the README) is not in {file}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 3, "the README's commands were found: {checked}");
        for always in ["target", ".keyward", "mutants.out"] {
            assert!(covered(always), "{always} is not in {file}");
        }
    }
}

#[test]
fn logs_are_plain_json_values_without_colours_and_an_error_is_said_once() {
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("log");
    let server = support::process::spawn_with(
        &work.path().join("data"),
        Some(&log),
        &["--plan", "hobby", "--log-format", "json"],
    );
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes when not at a terminal: {text}"
    );
    let listening: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "reference CMS listening")
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(listening["fields"]["plan"], "hobby", "{listening}");
    // A CMS that cannot be reached: retried, and the error said once, at the end.
    std::fs::write(work.path().join("p.yaml"), OTHER).unwrap();
    let (code, _, err, _) = keyward(
        work.path(),
        &["plan", "-f", "p.yaml"],
        &[
            ("KEYWARD_CMS_URL", "http://127.0.0.1:9"),
            ("KEYWARD_CMS_TOKEN", support::ADMIN),
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(err.contains("CMS call failed; retrying"), "{err}");
}

fn shared_settings_policy(name: &str, origin: &str, public: &str) -> String {
    format!(
        "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  cors: {{origins: ['{origin}']}}\n{public}  keys:\n    - name: k\n      defaultPermissions: [GET]\n      secret: {{name: {name}-k}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_takes_away_only_the_settings_entries_of_deleted_policies() {
    let (cms, work) = setup().await;
    cms.api("feedback").await;
    let w = work.path();
    let public = "  publicEndpoints: [{api: feedback, operations: [create]}]\n";
    std::fs::create_dir(w.join("policies")).unwrap();
    std::fs::write(
        w.join("policies/a.yaml"),
        shared_settings_policy("a", "https://a.example", public),
    )
    .unwrap();
    std::fs::write(
        w.join("policies/b.yaml"),
        shared_settings_policy("b", "https://b.example", ""),
    )
    .unwrap();
    let env = [
        ("KEYWARD_CMS_URL", cms.url.as_str()),
        ("KEYWARD_CMS_TOKEN", support::ADMIN),
    ];
    let apply = |extra: &[&str]| {
        let mut args = vec!["apply", "-f", "policies", "--secrets-dir", "out"];
        args.extend(extra);
        let (code, out, err, _) = keyward(w, &args, &env);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    apply(&[]);
    let cors =
        || async { cms.admin(Method::GET, "/v1/cors", None).await.body["effective"].clone() };
    let feedback = || async {
        cms.admin(Method::GET, "/v1/apis/feedback/public", None)
            .await
            .body["effective"]
            .clone()
    };
    assert_eq!(
        cors().await,
        serde_json::json!(["https://a.example", "https://b.example"])
    );
    assert_eq!(feedback().await, serde_json::json!(["create"]));
    // Each policy holds its own entry.
    let owners = cms.admin(Method::GET, "/v1/owners", None).await.body;
    assert_eq!(
        owners["owners"]["policy:shop.a"],
        serde_json::json!({"origins": ["https://a.example"], "publicEndpoints": {"feedback": ["create"]}}),
        "{owners}"
    );
    // Policy a is deleted from git: its entry stays until --prune, then its origin and its
    // public endpoint go and b's origin stays.
    std::fs::remove_file(w.join("policies/a.yaml")).unwrap();
    apply(&[]);
    assert_eq!(feedback().await, serde_json::json!(["create"]));
    let out = apply(&["--prune"]);
    assert!(
        out.contains("~ public   feedback for shop/a: [create] -> []"),
        "{out}"
    );
    assert_eq!(cors().await, serde_json::json!(["https://b.example"]));
    assert_eq!(feedback().await, serde_json::json!([]));
    // An origin set by hand (the CMS's unowned base) and an operator's policy's entry (its
    // owner carries a UID) are never touched: b is deleted, only b's origin goes.
    cms.admin(
        Method::PUT,
        "/v1/cors",
        Some(serde_json::json!({"origins": ["https://hand.example"]})),
    )
    .await;
    cms.admin(
        Method::PUT,
        "/v1/cors/owners/policy:shop.c@6f1c0a52-1d1e-4f5e-9c39-3d1b2b0e9a10",
        Some(serde_json::json!({"origins": ["https://cluster.example"]})),
    )
    .await;
    std::fs::write(w.join("policies/b.yaml"), OTHER).unwrap();
    apply(&["--prune"]);
    assert_eq!(
        cors().await,
        serde_json::json!(["https://cluster.example", "https://hand.example"])
    );
}

#[test]
fn every_problem_of_every_file_is_reported_at_its_line_before_any_call_to_the_cms() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::create_dir(w.join("policies")).unwrap();
    // Five different mistakes in one file: two found while reading, three by the rules.
    std::fs::write(
        w.join("policies/a.yaml"),
        "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata:
  name: web
  namespace: Shop_1
spec:
  keys:
    - name: front
      defaultPermissions: [GET, FETCH]
      expiresAfter: 3 fortnights
      secret:
        name: web-front
        colour: red
    - name: back
      defaultPermissions: [GET]
      secret:
        name: My Secret
",
    )
    .unwrap();
    // And more in another file: two in one key, and a connection that cannot be read (the
    // policy that uses it is not also told that it is missing).
    std::fs::write(
        w.join("policies/b.yaml"),
        "apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {name: ops, namespace: shop}
spec:
  connectionRef: {kind: CmsConnection, name: broken}
  keys:
    - name: migrate
      kind: management
      environments: [Prod!]
      secret: {name: ops-migrate}
---
apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: broken, namespace: shop}
spec:
  endpoint: 42
  credentialsSecretRef: {name: token}
",
    )
    .unwrap();
    // A CMS that only counts: keyward must not even connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    for command in ["plan", "apply"] {
        let (code, out, err, _) = keyward(
            w,
            &[command, "-f", "policies"],
            &[
                ("KEYWARD_CMS_URL", url.as_str()),
                ("KEYWARD_CMS_TOKEN", support::ADMIN),
            ],
        );
        assert_eq!(code, 1, "{out}{err}");
        let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("policies/")).collect();
        assert_eq!(
            problems,
            [
                "policies/a.yaml:5: ApiKeyPolicy Shop_1/web: metadata.namespace: 'Shop_1' is not a valid namespace (lowercase DNS label: letters, digits and '-', at most 63)",
                "policies/a.yaml:9: ApiKeyPolicy Shop_1/web: spec.keys[0].defaultPermissions[1]: unknown variant `FETCH`, expected one of `GET`, `GET_ALL_DRAFTS`, `GET_ALL_CLOSED`, `POST`, `PUT`, `PATCH`, `DELETE`",
                "policies/a.yaml:10: ApiKeyPolicy Shop_1/web: spec.keys[0].expiresAfter: '3 fortnights' is not a duration like 90d, 12h, 10m or 1h30m (units s, m, h, d, w, y)",
                "policies/a.yaml:13: ApiKeyPolicy Shop_1/web: spec.keys[0].secret.colour: unknown field `colour`, expected one of `name`, `keyField`, `extraFields`, `labels`, `annotations`, `adopt`, `deletionPolicy`",
                "policies/a.yaml:17: ApiKeyPolicy Shop_1/web: spec.keys[1].secret.name: 'My Secret' is not a valid Secret name (lowercase DNS subdomain)",
                "policies/b.yaml:7: ApiKeyPolicy shop/ops: spec.keys[0].managementPermissions: a management key needs at least one management permission",
                "policies/b.yaml:9: ApiKeyPolicy shop/ops: spec.keys[0].environments[0]: 'Prod!' is not an environment name (lowercase letters, digits, '-', '_')",
                "policies/b.yaml:16: CmsConnection shop/broken: spec.endpoint: invalid type: integer, expected a string",
            ],
            "{err}"
        );
        assert!(
            !out.contains("no changes") && !err.contains("no changes"),
            "{out}{err}"
        );
    }
    listener.set_nonblocking(true).unwrap();
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "keyward connected to the CMS although the manifests are invalid"
    );
    assert!(!w.join(".keyward").exists(), "nothing is written");
}

/// Lifetimes whose end no time can hold are errors at their line, never a crash: before, the
/// sum of "99y" parts was unbounded and `now + lifetime` panicked (exit 101).
#[test]
fn a_lifetime_past_the_end_of_time_is_an_error_not_a_crash() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let key = |name: &str, after: &str| {
        format!("    - name: {name}\n      defaultPermissions: [GET]\n      expiresAfter: '{after}'\n      secret: {{name: {name}}}\n")
    };
    std::fs::write(
        w.join("p.yaml"),
        format!(
            "apiVersion: keyward.dev/v1alpha1\nkind: ApiKeyPolicy\nmetadata: {{name: web, namespace: shop}}\nspec:\n  keys:\n{}{}",
            key("endless", &"99y".repeat(81)),
            key("long", "99y99y")
        ),
    )
    .unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("p.yaml")).collect();
    assert_eq!(
        problems,
        [
            "p.yaml:8: ApiKeyPolicy shop/web: spec.keys[0].expiresAfter: '99y99y99y99y99y99y99y99y99y99y99...' is longer than 32 characters",
            "p.yaml:12: ApiKeyPolicy shop/web: spec.keys[1].expiresAfter: '99y99y' is longer than 100 years in all",
        ],
        "{err}"
    );
}

/// A connection whose endpoint holds a credential, a query or a fragment is refused at its
/// field before any call, and the endpoint (which may hold a password) is never printed.
#[test]
fn an_endpoint_with_a_credential_or_a_query_is_refused_unprinted() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(
        w.join("p.yaml"),
        "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: main, namespace: shop}
spec:
  endpoint: https://admin:do-not-echo-me@cms.example.com
  credentialsSecretRef: {name: token}
---
apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {name: other, namespace: shop}
spec:
  endpoint: https://cms.example.com/api?do-not-echo-me=1
  credentialsSecretRef: {name: token}
",
    )
    .unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml"], &[]);
    assert_eq!(code, 1, "{out}{err}");
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("p.yaml")).collect();
    assert_eq!(
        problems,
        [
            "p.yaml:5: CmsConnection shop/main: spec.endpoint: holds a credential (user:password@); give it as a Secret or an environment variable",
            "p.yaml:12: CmsConnection shop/other: spec.endpoint: has a query or a fragment ('?' or '#'); give the base URL only",
        ],
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("do-not-echo-me"));
}

/// A connection contributed to a shared repository names an endpoint of its own and no
/// credential Secret: the platform's KEYWARD_CMS_TOKEN is not sent there. It is sent to the
/// endpoint it was given for (KEYWARD_CMS_URL), written however.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_token_goes_only_to_its_own_endpoint() {
    let (cms, work) = setup().await;
    let w = work.path();
    let attacker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connection = |endpoint: &str| {
        format!(
            "apiVersion: keyward.dev/v1alpha1
kind: CmsConnection
metadata: {{name: contrib, namespace: shop}}
spec:
  endpoint: {endpoint}
  credentialsSecretRef: {{name: cms-admin}}
---
apiVersion: keyward.dev/v1alpha1
kind: ApiKeyPolicy
metadata: {{name: web, namespace: shop}}
spec:
  connectionRef: {{name: contrib}}
  keys:
    - name: reader
      defaultPermissions: [GET]
      secret: {{name: reader, keyField: CMS_API_KEY}}
"
        )
    };
    let env = [
        ("KEYWARD_CMS_URL", cms.url.as_str()),
        ("KEYWARD_CMS_TOKEN", support::ADMIN),
    ];
    let elsewhere = format!("http://{}", attacker.local_addr().unwrap());
    std::fs::write(w.join("contrib.yaml"), connection(&elsewhere)).unwrap();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "contrib.yaml"], &env);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!("credential Secret shop/cms-admin (field 'token') is not in the manifests; KEYWARD_CMS_TOKEN is only sent to KEYWARD_CMS_URL ({}), not to this connection's endpoint {elsewhere}", cms.url)),
        "{err}"
    );
    attacker.set_nonblocking(true).unwrap();
    assert_eq!(
        attacker.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing was sent to the contributed endpoint"
    );
    // The endpoint the token is for, written with a trailing slash: used.
    std::fs::write(w.join("contrib.yaml"), connection(&format!("{}/", cms.url))).unwrap();
    let (code, out, err, _) = keyward(
        w,
        &["apply", "-f", "contrib.yaml", "--secrets-dir", "out"],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!value(&w.join("out"), "shop.reader.yaml").is_empty());
}
