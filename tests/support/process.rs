//! The `keyward` binary as its own process.

use super::ADMIN;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `keyward cms serve` on `dir` and a free loopback port, logging to `log` (trace level).
pub fn spawn(dir: &std::path::Path, log: Option<&std::path::Path>) -> Server {
    spawn_with(dir, log, &[])
}

/// As [`spawn`], with more `cms serve` flags.
pub fn spawn_with(dir: &std::path::Path, log: Option<&std::path::Path>, args: &[&str]) -> Server {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::null(),
    };
    let mut child = serve_command(dir)
        .args(args)
        .env("KEYWARD_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.to_owned();
        }
    };
    Server { child, url }
}

/// The `keyward cms serve` command line on `dir` (not started).
pub fn serve_command(dir: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
    c.args(["cms", "serve", "--data"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--key-rate", "100000"])
        .env("KEYWARD_CMS_ADMIN_TOKEN", ADMIN);
    c
}

/// Takes the caller's `KEYWARD_*`, `SSL_CERT*` and `KUBECONFIG` variables away from `cmd`: a test's
/// process sees only the settings the test gives it.
pub fn without_callers_settings(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("KEYWARD_") || k.starts_with("SSL_CERT") || k == "KUBECONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `keyward ARGS` in `dir`, with none of the caller's `KEYWARD_*` / `SSL_CERT*` variables but
/// those of `env`: (exit code, stdout, stderr, seconds).
pub fn keyward(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String, f64) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.current_dir(dir).args(args);
    without_callers_settings(&mut cmd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}
