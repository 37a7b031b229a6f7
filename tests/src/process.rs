//! A local CDN runtime (`wrangler dev`, `viceroy serve`) as a child process: started in its own process group with
//! its output in a log file, ready once it listens on its port and answers HTTP, stopped with everything it started
//! when dropped.

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
    port: u16,
    name: &'static str,
    child: Child,
    dir: tempfile::TempDir,
}

/// What a runtime prints when its port was taken.
const PORT_TAKEN: &str = "Address already in use";

/// Whether a process in group `pgid` holds the socket listening on `127.0.0.1:port` (from `/proc`: the listener's
/// inode in `/proc/net/tcp`, then the group's open descriptors).
fn listens_in_group(port: u16, pgid: u32) -> bool {
    let Some(inode) = listening_inode(port) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let path = p.path();
        let in_group = std::fs::read_to_string(path.join("stat")).is_ok_and(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses, so split after the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2))
                .is_some_and(|g| g == pgid.to_string())
        });
        in_group
            && std::fs::read_dir(path.join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
            })
    })
}

/// The inode of the socket listening on `127.0.0.1:port`, if any.
fn listening_inode(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    // Fields: sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode; 127.0.0.1 is 0100007F and
    // LISTEN is state 0A.
    let local = format!("0100007F:{port:04X}");
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[3] == "0A")
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// When a spawned runtime counts as started: a process of its group listens on its port, and `GET probe` gets an
/// answer that `ours` recognises as the runtime's own, within `limit`.
pub struct Ready {
    pub probe: &'static str,
    pub ours: fn(&reqwest::Response) -> bool,
    pub limit: Duration,
}

/// Start a runtime with `start` up to three times: its ports are picked free and then handed to it, so a parallel test
/// can take one in between, and each attempt picks new ones (a real failure fails all three times, with the runtime's
/// output).
pub async fn on_fresh_ports<T, Fut>(name: &str, mut start: impl FnMut() -> Fut) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for _ in 0..3 {
        match start().await {
            Ok(started) => return Ok(started),
            Err(e) => {
                eprintln!("{name} did not start, trying again on new ports: {e:#}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
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
            port,
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
            // implemented"; another test's worker answers the probe just like ours), and any answer at all would
            // pass for ready. So the port's listening socket must belong to the runtime's process group, and a
            // runtime that says it could not bind (wrangler then stays up without serving) fails at once, to be
            // retried on new ports.
            if self.log().contains(PORT_TAKEN) {
                bail!("{} could not listen on {}:\n{}", self.name, self.addr, self.log_tail());
            }
            if listens_in_group(self.port, self.child.id())
                && client
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process answering on the port handed to a runtime is not taken for the runtime.
    #[tokio::test]
    async fn an_answer_from_another_process_is_not_ready() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(|| async { "ok" });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let ready = Ready {
            probe: "/",
            ours: |r| r.status().is_success(),
            limit: Duration::from_secs(2),
        };
        // The answer itself passes `ours`, so only the listener check can refuse it.
        let r = reqwest::get(format!("http://127.0.0.1:{port}/")).await.unwrap();
        assert!((ready.ours)(&r));
        let err = RuntimeProcess::spawn("sleep", cmd, tempfile::tempdir().unwrap(), port, ready)
            .await
            .err()
            .expect("another process's answer counted as ready");
        assert!(err.to_string().contains("did not answer"), "{err:#}");
        // This process does hold the listener.
        assert!(listens_in_group(
            port,
            rustix::process::getpgrp().as_raw_nonzero().get() as u32
        ));
    }
}
