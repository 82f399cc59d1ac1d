//! Runs model-written Python for humaneval/mbpp: a `python3 -I` subprocess in a fresh temporary
//! directory (removed after), with CPU-time, address-space and wall-clock limits, an empty environment,
//! and no network where unprivileged user namespaces allow `unshare -rn`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Limits {
    pub wall: Duration,
    pub memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            wall: Duration::from_secs(10),
            memory_mb: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    TimedOut,
}

fn can_unshare_net() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        Command::new("unshare")
            .args(["-rn", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// Runs `program`; passes when it exits 0 within the limits.
pub fn run_python(program: &str, limits: &Limits) -> Result<Outcome> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::Sandbox(format!("creating a temporary directory: {e}")))?;
    let path = dir.path().join("program.py");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(program.as_bytes()))
        .map_err(|e| Error::Sandbox(format!("writing the program: {e}")))?;
    let cpu = limits.wall.as_secs().max(1);
    let script = format!(
        "ulimit -v {} 2>/dev/null; ulimit -t {cpu} 2>/dev/null; exec python3 -I program.py",
        limits.memory_mb * 1024
    );
    let mut cmd = if can_unshare_net() {
        let mut c = Command::new("unshare");
        c.args(["-rn", "sh", "-c", &script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let mut child = cmd
        .current_dir(dir.path())
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Sandbox(format!("starting python3: {e}")))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let mut err = String::new();
                if let Some(mut s) = child.stderr.take() {
                    use std::io::Read;
                    let _ = s.read_to_string(&mut err);
                }
                return Ok(if status.success() {
                    Outcome::Passed
                } else {
                    Outcome::Failed(err.lines().last().unwrap_or("").to_string())
                });
            }
            Ok(None) if start.elapsed() > limits.wall => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Outcome::TimedOut);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(Error::Sandbox(format!("waiting for python3: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_fail_and_timeout() {
        let l = Limits {
            wall: Duration::from_secs(5),
            memory_mb: 512,
        };
        assert_eq!(
            run_python("assert 1 + 1 == 2\n", &l).unwrap(),
            Outcome::Passed
        );
        assert!(matches!(
            run_python("assert 1 + 1 == 3\n", &l).unwrap(),
            Outcome::Failed(_)
        ));
        let short = Limits {
            wall: Duration::from_millis(300),
            memory_mb: 512,
        };
        assert_eq!(
            run_python("while True: pass\n", &short).unwrap(),
            Outcome::TimedOut
        );
    }
}
