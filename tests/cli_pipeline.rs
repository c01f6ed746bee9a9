//! The CLI as a pipeline runs it, through the binary: exit codes that cannot be mistaken for
//! one another, connection settings that go nowhere, manifests from standard input and in
//! every YAML document form, machine-readable output, and output in the manifests' words.

mod support;

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use support::process::{keyward, without_callers_settings};

use support::SITE_POLICY as POLICY;

/// `keyward ARGS` in `dir`: its exit code and all it printed.
fn said(dir: &Path, args: &[&str]) -> (i32, String) {
    let (code, out, err, _) = keyward(dir, args, &[]);
    (code, format!("{out}{err}"))
}

/// A work directory holding `p.yaml` (the policy above).
fn work() -> tempfile::TempDir {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("p.yaml"), POLICY).unwrap();
    work
}

/// Every exit path the README documents: 0 done or nothing to do, 2 changes pending (plan) or
/// ObserveOnly changes left (apply), 1 anything that went wrong, usage errors included; help
/// and version 0.
#[test]
fn every_exit_code_means_one_thing() {
    let work = work();
    let w = work.path();
    let code = |args: &[&str]| said(w, args);
    for ok in [
        &["--help"][..],
        &["--version"],
        &["plan", "--help"],
        &["help", "apply"],
    ] {
        assert_eq!(code(ok).0, 0, "{ok:?}");
    }
    for usage in [
        &["plan", "-f", "p.yaml", "--nope"][..],
        &["plan"],
        &["plna", "-f", "p.yaml"],
        &["apply", "-f", "p.yaml", "--lock-timeout", "abc"],
        &["plan", "-f", "p.yaml", "-o", "xml"],
        &[],
        &["cms"],
        &["operator", "--workers", "0"],
    ] {
        let (c, said) = code(usage);
        assert_eq!(c, 1, "{usage:?}: {said}");
        assert!(
            said.contains("error") || said.contains("Usage"),
            "{usage:?}: {said}"
        );
    }
    assert_eq!(code(&["plan", "-f", "p.yaml"]).0, 2, "a key to create");
    assert_eq!(code(&["apply", "-f", "p.yaml"]).0, 0);
    assert_eq!(code(&["plan", "-f", "p.yaml"]).0, 0, "nothing to do");
    let observe = POLICY.replace("spec:\n", "spec:\n  managementPolicy: ObserveOnly\n");
    let observe = observe
        .replace("name: site", "name: watched")
        .replace("{name: reader}", "{name: watched}");
    std::fs::write(w.join("observe.yaml"), observe).unwrap();
    let (c, said) = code(&["apply", "-f", "p.yaml", "-f", "observe.yaml"]);
    assert_eq!(c, 2, "ObserveOnly changes left: {said}");
    std::fs::write(w.join("bad.yaml"), "kind: ApiKeyPolicy\napiVersion: v1\n").unwrap();
    assert_eq!(code(&["plan", "-f", "bad.yaml"]).0, 1);
    assert_eq!(code(&["plan", "-f", "missing.yaml"]).0, 1);
}

/// A token or a provider without the CMS it is for is an error before anything runs: the
/// embedded CMS is never started, so no Secret points at it.
#[test]
fn a_connection_setting_without_its_endpoint_is_an_error() {
    let work = work();
    let w = work.path();
    for (env, named) in [
        (
            &[("KEYWARD_CMS_TOKEN", "secret-token")][..],
            "KEYWARD_CMS_TOKEN (from env KEYWARD_CMS_TOKEN)",
        ),
        (
            &[("KEYWARD_CMS_PROVIDER", "strapi")],
            "the CMS provider 'strapi' (from env KEYWARD_CMS_PROVIDER)",
        ),
    ] {
        for command in ["plan", "apply"] {
            let (code, out, err, _) = keyward(w, &[command, "-f", "p.yaml"], env);
            assert_eq!(code, 1, "{command} {env:?}: {out}{err}");
            assert!(err.contains(named), "{err}");
            assert!(err.contains("no CMS URL"), "{err}");
            assert!(!err.contains("secret-token") && !out.contains("secret-token"));
        }
    }
    // A profile's token_env counts the same.
    std::fs::write(
        w.join("keyward.toml"),
        "[profiles.ci.cms]\ntoken_env = \"CI_CMS_TOKEN\"\n",
    )
    .unwrap();
    let (code, _, err, _) = keyward(
        w,
        &["apply", "-f", "p.yaml", "--profile", "ci"],
        &[("CI_CMS_TOKEN", "t")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CI_CMS_TOKEN (from profile ci)"), "{err}");
    assert!(!w.join(".keyward").exists(), "the embedded CMS was started");
    assert!(!w.join(".keyward/secrets").exists());
}

/// `keyward ARGS` with `input` on standard input.
fn with_stdin(dir: &Path, args: &[&str], input: &str) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyward"));
    let mut child = without_callers_settings(&mut command)
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kustomize build ... | keyward plan -f -`, and documents that start on their `---` line:
/// every document is read (one dropped would be pruned), problems name `<stdin>:LINE`.
#[test]
fn manifests_come_from_standard_input_in_every_document_form() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let inline = |name: &str| {
        format!("--- {{apiVersion: keyward.dev/v1alpha1, kind: ApiKeyPolicy, metadata: {{name: {name}, namespace: shop}}, spec: {{keys: [{{name: k, defaultPermissions: [GET], secret: {{name: {name}}}}}]}}}}\n")
    };
    let stream = format!("{}{}---\n{POLICY}", inline("first"), inline("second"));
    let (code, out, err) = with_stdin(w, &["plan", "-f", "-", "-o", "json"], &stream);
    assert_eq!(code, 2, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    let mut created: Vec<String> = json["connections"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "create")
        .map(|a| {
            format!(
                "{}/{}",
                a["key"]["policy"]["namespace"].as_str().unwrap(),
                a["key"]["policy"]["name"].as_str().unwrap()
            )
        })
        .collect();
    created.sort();
    assert_eq!(created, ["shop/first", "shop/second", "shop/site"], "{out}");

    // The same from a file, through apply: three Secrets.
    std::fs::write(w.join("all.yaml"), &stream).unwrap();
    let (code, out, err, _) = keyward(w, &["apply", "-f", "all.yaml", "--secrets-dir", "out"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    for name in ["first", "second", "reader"] {
        assert!(
            w.join(format!("out/shop.{name}.yaml")).exists(),
            "{name}: {out}"
        );
    }

    let bad = format!(
        "{POLICY}---\n{}",
        POLICY
            .replace("[GET]", "[GETT]")
            .replace("name: site", "name: other")
    );
    let (code, _, err) = with_stdin(w, &["plan", "-f", "-"], &bad);
    assert_eq!(code, 1);
    assert!(err.contains("<stdin>:16: ApiKeyPolicy shop/other"), "{err}");
}

#[test]
fn plan_and_apply_speak_json_and_yaml_with_a_format_version() {
    let work = work();
    let w = work.path();
    let (code, out, err, _) = keyward(w, &["plan", "-f", "p.yaml", "-o", "yaml"], &[]);
    assert_eq!(code, 2, "{err}");
    let yaml: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(yaml["formatVersion"], 1);
    assert_eq!(yaml["changes"], true);
    let (code, out, err, _) = keyward(w, &["apply", "-f", "p.yaml", "-o", "json"], &[]);
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["formatVersion"], 1);
    assert_eq!(
        json,
        serde_yaml_ng::from_str::<Value>(&serde_yaml_ng::to_string(&json).unwrap()).unwrap()
    );
}

/// The README's first command, as a new user runs it: every line of plan and apply output
/// names values as the manifests write them, never as Rust prints its own values.
#[test]
fn the_first_command_speaks_the_manifests_words() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let examples = support::examples();
    let examples = examples.to_str().unwrap();
    let mut lines = Vec::new();
    for command in ["plan", "apply"] {
        let (code, out, err, _) =
            keyward(w, &[command, "-f", examples, "--secrets-dir", "out/"], &[]);
        assert!(code == 0 || code == 2, "{command}: {out}{err}");
        lines.extend(out.lines().map(str::to_owned));
    }
    let settings: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("public") || l.contains("cors") || l.contains("CORS"))
        .collect();
    assert!(settings.len() >= 2, "{lines:#?}");
    assert!(
        settings.iter().any(|l| l.contains("to [create]")),
        "{settings:#?}"
    );
    for l in &lines {
        for rust in ["{\"", "[\"", "{Create", "Some(", "None", "\\\""] {
            assert!(!l.contains(rust), "{rust} in: {l}");
        }
    }
}

/// On a terminal, apply says how far it got on stderr; piped, or with `-o json`, never.
#[test]
fn progress_shows_on_a_terminal_only() {
    let work = work();
    let w = work.path();
    let three = POLICY.replace(
        "      secret: {name: reader}\n",
        "      secret: {name: reader}\n    - name: b\n      defaultPermissions: [GET]\n      secret: {name: b}\n    - name: c\n      defaultPermissions: [GET]\n      secret: {name: c}\n",
    );
    std::fs::write(w.join("p.yaml"), three).unwrap();
    // `script` gives the command a terminal (util-linux, on every Debian).
    let on_terminal = |args: &str| {
        let mut script = Command::new("script");
        let out = without_callers_settings(&mut script)
            .current_dir(w)
            .args([
                "-qec",
                &format!("{} {args}", env!("CARGO_BIN_EXE_keyward")),
                "/dev/null",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let json = on_terminal("plan -f p.yaml -o json");
    assert!(!json.contains("applying"), "{json}");
    let shown = on_terminal("apply -f p.yaml --secrets-dir out");
    for n in 1..=3 {
        assert!(
            shown.contains(&format!("applying: {n} of 3 changes done")),
            "{shown}"
        );
    }
    std::fs::remove_dir_all(w.join("out")).unwrap();
    std::fs::remove_dir_all(w.join(".keyward")).unwrap();
    let (code, out, err, _) = keyward(w, &["apply", "-f", "p.yaml", "--secrets-dir", "out"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !err.contains("applying") && !out.contains("applying:"),
        "{err}"
    );
}

/// Completions and the manual page come from the parser's own definitions.
#[test]
fn completions_and_manual_pages_follow_the_flags() {
    let w = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, _, _) = keyward(w.path(), &["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}");
        assert!(
            out.contains("secrets-dir") && out.contains("regenerate-missing"),
            "{shell}"
        );
    }
    let (code, page, _, _) = keyward(w.path(), &["man"], &[]);
    assert_eq!(code, 0);
    assert!(
        page.contains(".TH keyward 1") && page.contains("completions"),
        "{page}"
    );
    let (code, page, _, _) = keyward(w.path(), &["man", "apply"], &[]);
    assert_eq!(code, 0);
    assert!(
        page.contains(".TH keyward\\-apply 1") || page.contains(".TH keyward-apply 1"),
        "{page}"
    );
    assert!(page.contains("\\-\\-prune"), "{page}");
    let (code, _, err, _) = keyward(w.path(), &["man", "nope"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no subcommand 'nope'"), "{err}");
}

/// Every key value in the Secret files of `dir`.
fn secret_values(dir: &Path) -> Vec<String> {
    let mut values = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let Ok(s) = serde_yaml_ng::from_str::<k8s_openapi::api::core::v1::Secret>(&text) else {
            continue;
        };
        for v in s.data.unwrap_or_default().into_values() {
            values.push(String::from_utf8(v.0).unwrap());
        }
    }
    values
}

/// `plan --out FILE` then `apply FILE`: exactly that plan, or nothing when the manifests or
/// the CMS moved in between, saying what moved. The file holds no key value.
#[test]
fn a_saved_plan_is_applied_exactly_or_not_at_all() {
    let work = work();
    let w = work.path();
    let run = |args: &[&str]| said(w, args);
    let (code, said) = run(&[
        "plan",
        "-f",
        "p.yaml",
        "--secrets-dir",
        "out",
        "--out",
        "1.json",
    ]);
    assert_eq!(code, 2, "{said}");
    let (code, said) = run(&["apply", "1.json", "--secrets-dir", "out"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("created key shop/site/reader"), "{said}");
    assert_eq!(run(&["plan", "-f", "p.yaml", "--secrets-dir", "out"]).0, 0);

    // The manifests moved after the plan: refused, nothing applied.
    std::fs::write(w.join("p.yaml"), POLICY.replace("[GET]", "[GET, POST]")).unwrap();
    assert_eq!(
        run(&[
            "plan",
            "-f",
            "p.yaml",
            "--secrets-dir",
            "out",
            "--out",
            "2.json"
        ])
        .0,
        2
    );
    std::fs::write(w.join("p.yaml"), POLICY.replace("[GET]", "[GET, DELETE]")).unwrap();
    let (code, said) = run(&["apply", "2.json", "--secrets-dir", "out"]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("saved plan is out of date") && said.contains("p.yaml changed"),
        "{said}"
    );
    assert!(!said.contains("applied:"), "{said}");

    // The CMS moved after the plan (someone applied): refused.
    assert_eq!(
        run(&[
            "plan",
            "-f",
            "p.yaml",
            "--secrets-dir",
            "out",
            "--out",
            "3.json"
        ])
        .0,
        2
    );
    assert_eq!(run(&["apply", "-f", "p.yaml", "--secrets-dir", "out"]).0, 0);
    let (code, said) = run(&["apply", "3.json", "--secrets-dir", "out"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("changed"), "{said}");

    let (code, said) = run(&["apply", "3.json", "-f", "p.yaml"]);
    assert_eq!(code, 1, "{said}");
    let (code, said) = run(&["apply", "p.yaml"]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("not a saved plan"), "{said}");
    // A directory where a saved plan was expected: say how manifests are given.
    let (code, said) = run(&["apply", "."]);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("cannot read the saved plan . (manifests are given with -f)"),
        "{said}"
    );

    let values = secret_values(&w.join("out"));
    assert!(!values.is_empty());
    for plan in ["1.json", "2.json", "3.json"] {
        let text = std::fs::read_to_string(w.join(plan)).unwrap();
        for v in &values {
            assert!(!text.contains(v.as_str()), "{plan} holds a key value");
        }
    }
}
