//! The processes under test: started, watched (RSS, CPU) and killed by the driver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process killed (SIGKILL) when dropped, so that a failed run leaves nothing behind.
pub struct Proc {
    child: Child,
    pub addr: SocketAddr,
    pub started: Instant,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Proc {
    /// `switchboard serve` on a free loopback port with its data in `data_dir`, durable as shipped.
    pub fn switchboard(bin: &Path, data_dir: &Path) -> anyhow::Result<Proc> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        // Its own logs, as shipped (info), to a file beside its data: read when something fails.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(data_dir.with_extension("log"))?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Proc { child, addr, started: Instant::now() })
    }

    /// This binary's own bare handler (anchor a).
    pub fn anchor() -> anyhow::Result<Proc> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let me: PathBuf = std::env::current_exe()?;
        let child = Command::new(me).args(["anchor", "--listen", &addr.to_string()]).stdout(Stdio::null()).spawn()?;
        Ok(Proc { child, addr, started: Instant::now() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `path` answers 2xx; returns the time since the process started.
    pub async fn ready(&mut self, path: &str, limit: Duration) -> anyhow::Result<Duration> {
        let mut conn = crate::http::Conn::new(self.addr);
        while self.started.elapsed() < limit {
            if let Ok(r) = conn.send("GET", path, "", b"").await
                && (200..300).contains(&r.status)
            {
                return Ok(self.started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the process exited ({status}) before {path} answered 2xx");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        bail!("{path} did not answer 2xx within {limit:?}")
    }

    /// Resident memory in bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmRSS in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// CPU seconds used so far (user + system).
    pub fn cpu_s(&self) -> anyhow::Result<f64> {
        cpu_s(self.pid())
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cpu_s(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ')'.
    let rest = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(ticks / 100.0)
}
