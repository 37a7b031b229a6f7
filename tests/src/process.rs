//! A local CDN runtime (`wrangler dev`, `viceroy serve`) as a child process: started in its own process group with
//! its output in a log file, ready once it answers HTTP, stopped with everything it started when dropped.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running runtime on a loopback port.
pub struct RuntimeProcess {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// `127.0.0.1:port`.
    pub addr: String,
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
}

/// When a spawned runtime counts as started: `GET probe` gets an answer that `ours` recognises as the runtime's own,
/// within `limit`.
pub struct Ready {
    pub probe: &'static str,
    pub ours: fn(&reqwest::Response) -> bool,
    pub limit: Duration,
}

impl RuntimeProcess {
    /// Spawn `cmd` (which serves on `port`) with its output in `dir/<name>.log`, and wait until it is `ready`. `dir`
    /// (the runtime's configuration) lives as long as the process.
    pub async fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: tempfile::TempDir,
        port: u16,
        ready: Ready,
    ) -> Result<RuntimeProcess> {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so stopping it also stops what it started (workerd under wrangler).
            cmd.process_group(0);
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let addr = format!("127.0.0.1:{port}");
        let mut p = RuntimeProcess {
            base: format!("http://{addr}"),
            addr,
            name,
            child,
            dir,
        };
        p.wait_ready(&ready).await?;
        Ok(p)
    }

    async fn wait_ready(&mut self, ready: &Ready) -> Result<()> {
        let start = Instant::now();
        let client = reqwest::Client::new();
        while start.elapsed() < ready.limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
            }
            // Only the runtime's own answer counts: ports are picked free and handed over, so another process can
            // take one in between (another test's workerd inspector answers any GET with 500 "Not yet
            // implemented"), and any answer at all would pass for ready.
            if client
                .get(format!("{}{}", self.base, ready.probe))
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .is_ok_and(|r| (ready.ours)(&r))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} did not answer within {:?}:\n{}",
            self.name,
            ready.limit,
            self.log_tail()
        )
    }

    /// The runtime's configuration directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime's output so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// The last lines of the runtime's output (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for RuntimeProcess {
    fn drop(&mut self) {
        use rustix::process::{Pid, Signal, kill_process_group};
        let group = Pid::from_child(&self.child);
        let _ = kill_process_group(group, Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = kill_process_group(group, Signal::KILL);
        let _ = self.child.wait();
    }
}
