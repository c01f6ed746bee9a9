//! What the benchmarks that start servers share: the process, stopped however the benchmark
//! ends, the URL it says it listens on, and numbers from the environment.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A server's process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (its standard error passed through) and reads the URL from its
/// `listening on URL` line.
pub fn start(mut cmd: Command) -> (Server, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a server");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let url = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
        .expect("the server said where it listens");
    (server, url)
}

/// The number in environment variable `name`, else `default`; anything else stops the run.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} must be a number"))
        })
        .unwrap_or(default)
}
