//! A second S3-compatible server for tests: moto, serving one request at a time.
//!
//! s3s-fs checks `If-None-Match: *` and then writes the object, with the request body read in
//! between, so two conditional puts that meet can both succeed there; AWS S3 lets exactly one
//! through. moto run without threads serves requests one after the other, so its check and
//! its write are atomic the way S3's are, and a race between two jobs committing one S3
//! output can be run against it. moto accepts any credentials.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::ObjectStore;

/// moto's WSGI application under werkzeug's server, one request at a time.
const SERVE: &str = "\
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple('127.0.0.1', int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
";

/// A running moto server, stopped on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl MotoServer {
    /// Starts a server on a free port; returns once it answers.
    pub fn start() -> MotoServer {
        let python = super::python::python_with_moto();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args(["-c", SERVE, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let server = MotoServer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.request("GET /moto-api/ HTTP/1.0").is_err() {
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Sends one bodiless HTTP/1.0 request line; returns the status line.
    fn request(&self, line: &str) -> std::io::Result<String> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port))?;
        write!(
            c,
            "{line}\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\n\r\n",
            self.port
        )?;
        let mut reply = String::new();
        c.read_to_string(&mut reply)?;
        Ok(reply.lines().next().unwrap_or_default().to_string())
    }

    /// Creates bucket `name` (moto needs no signature for it) and returns a client for it.
    pub fn bucket(&self, name: &str) -> Arc<dyn ObjectStore> {
        let status = self.request(&format!("PUT /{name} HTTP/1.0")).unwrap();
        assert!(status.contains(" 200"), "creating bucket {name}: {status}");
        super::s3::client(&self.url, name, "moto", "moto")
    }

    /// A datastores file naming this server's bucket `bucket` as `race` (keys in `RACE_KEY`,
    /// `RACE_SECRET`: any will do).
    pub fn datastores(&self, dir: &std::path::Path, bucket: &str) -> std::path::PathBuf {
        super::s3::datastores_file(&dir.join("moto-datastores.toml"), "race", &self.url, bucket)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
