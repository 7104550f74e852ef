//! A private PostgreSQL cluster for the tests: Debian's `postgresql` server, `initdb` into a
//! temporary directory, listening on a free loopback port (and a socket in that directory),
//! started once per test binary; each test gets a database of its own. A watchdog stops the
//! cluster and removes its directory when the test binary exits, however it exits.
//!
//! PostgreSQL refuses to run as root: under root (the CI runner), the server runs as the
//! `postgres` user the package creates, through `setpriv`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The running cluster.
pub struct PgCluster {
    port: u16,
    dir: PathBuf,
}

/// Where the server's programs are: Debian's versioned directory, else `PATH`.
fn bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(|d| d.ok().map(|d| d.path())).collect())
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(program))
        .find(|p| p.exists())
        .unwrap_or_else(|| program.into())
}

fn as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `program args…`, as the `postgres` user when this process is root.
fn server_command(program: &str) -> Command {
    if as_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ])
            .arg(bin(program));
        command
    } else {
        Command::new(bin(program))
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (is Debian's postgresql installed? ./scripts/test.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// The cluster of this test binary, started on first use.
    pub fn shared() -> &'static PgCluster {
        static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
        CLUSTER.get_or_init(PgCluster::start)
    }

    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("writ-pg-")
            .tempdir()
            .expect("a temp dir")
            .keep();
        if as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown the cluster's directory",
            );
        }
        let data = dir.join("data");
        let mut initdb = server_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-U",
            "writ",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        ]);
        run(initdb, "initdb");
        let cluster = Self {
            port: free_port(),
            dir,
        };
        run(cluster.start_command(), "pg_ctl start");
        watchdog(&cluster.dir, &data);
        cluster
    }

    /// Stops the server at once (as a crash would), for tests of a database that goes away.
    pub fn stop(&self) {
        let mut stop = server_command("pg_ctl");
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// Starts the server again after [`PgCluster::stop`].
    pub fn start_again(&self) {
        run(self.start_command(), "pg_ctl start");
    }

    fn start_command(&self) -> Command {
        let mut start = server_command("pg_ctl");
        start
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=300",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "60", "start"]);
        start
    }

    /// A new, empty database in the cluster: its URL.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "writ_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        execute(&self.url("postgres"), &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://writ@127.0.0.1:{}/{name}", self.port)
    }
}

/// Runs `sql` on the database at `url` (from any thread, in a runtime or not).
pub fn execute(url: &str, sql: &str) {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test cluster");
            tokio::spawn(connection);
            client.batch_execute(&sql).await.expect("the statement ran");
        });
    })
    .join()
    .expect("the statement ran");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// Stops the cluster and removes `dir` once this process has exited.
fn watchdog(dir: &Path, data: &Path) {
    let stop = if as_root() {
        format!(
            "setpriv --reuid=postgres --regid=postgres --init-groups -- {} -D {} -m immediate stop",
            bin("pg_ctl").display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            bin("pg_ctl").display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    // `setsid -f` forks the watchdog off in a session of its own and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("start the cluster's watchdog");
    assert!(started.success(), "the cluster's watchdog did not start");
}
