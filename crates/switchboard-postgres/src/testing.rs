//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary folder, started on a free
//! loopback port with trust authentication for the role `switchboard`, stopped and removed on drop.
//! Needs Debian's `postgresql` package (the test command installs it). As root, the server runs as
//! the `postgres` user, since PostgreSQL refuses to run as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    root: bool,
}

/// The newest PostgreSQL's programs on this machine.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|b| b.join("initdb").exists()).collect())
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("no PostgreSQL server here: install Debian's `postgresql` package (scripts/test.sh does)"))
}

fn run(cmd: &mut Command) {
    if let Err(e) = attempt(cmd) {
        panic!("{e}");
    }
}

fn attempt(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    pub async fn start() -> Cluster {
        let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
        let dir = std::env::temp_dir().join(format!("switchboard-pg-{}-{}", std::process::id(), uuid_ish()));
        std::fs::create_dir_all(&dir).unwrap();
        if root {
            run(Command::new("chown").arg("postgres:").arg(&dir));
        }
        let mut cluster = Cluster { dir, bin: bin_dir(), port: free_port(), root };
        let data = cluster.dir.join("data");
        run(cluster.command("initdb").arg("-D").arg(&data).args(["-A", "trust", "-U", "switchboard", "-E", "UTF8", "--no-sync"]));
        // The free port may be taken by someone else (another test's server) before PostgreSQL binds it.
        for _ in 0..3 {
            match cluster.try_up() {
                Ok(()) => return cluster,
                Err(e) => {
                    let log = std::fs::read_to_string(cluster.dir.join("log")).unwrap_or_default();
                    eprintln!("PostgreSQL did not start on port {}, trying another: {e}\n{log}", cluster.port);
                    cluster.port = free_port();
                }
            }
        }
        cluster.up();
        cluster
    }

    /// Starts the server (again, after [`Cluster::down`]), on the same port, and waits until it takes
    /// connections.
    pub fn up(&self) {
        if let Err(e) = self.try_up() {
            let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            panic!("{e}\n{log}");
        }
    }

    fn try_up(&self) -> Result<(), String> {
        let options = format!("-p {} -h 127.0.0.1 -k {} -F", self.port, self.dir.display());
        attempt(
            self.command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-o", &options, "start"]),
        )
    }

    /// Stops the server at once, as a crash or an operator would; its data stays.
    pub fn down(&self) {
        run(self.command("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]));
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://switchboard@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub async fn database(&self, name: &str) -> String {
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        self.url(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.command("pg_ctl").arg("-D").arg(&data).args(["-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Enough uniqueness for folder names within one machine.
/// A name no other cluster of this process has: two tests starting clusters at the same instant once
/// got the same time here (CI: both initdb runs in one folder), so a counter comes with it.
fn uuid_ish() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{nanos:x}-{n}")
}
