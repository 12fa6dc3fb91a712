//! A headless Chromium driven over WebDriver, for tests of pages: each
//! [`Browser`] starts its own chromedriver (on a port it picks itself) and
//! one Chromium session, so tests run in parallel, and takes numbered
//! screenshots into `<target>/screenshots/<test>/`.
//!
//! The binaries come from Debian's `chromium` and `chromium-driver`
//! packages, which `deploy/local/stack start` installs; their paths are
//! `NETRA_CHROMIUM` and `NETRA_CHROMEDRIVER` (`deploy/local/stack env`, or
//! `.local/stack/netra.env`).
//!
//! Nothing outlives its test. chromedriver runs under a small `sh` that
//! leads a process group of its own (chromedriver and every Chromium
//! process it starts) and waits on a pipe from the test process: when the
//! [`Browser`] is dropped (also while its test panics) or the test process
//! dies in any way, the pipe closes and the shell kills the whole group.
//! Dropping also removes the temporary directory holding the profile (a
//! later start removes those of killed test processes).
//!
//! Every WebDriver command is bounded ([`COMMAND_LIMIT`]); the waits
//! ([`Browser::wait_for_text`], [`Browser::wait_for`]) poll up to the limit
//! their caller gives and never assert on how long something took.

use std::{
    collections::VecDeque,
    fmt::Display,
    future::Future,
    io::BufRead,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use fantoccini::{error::CmdError, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

/// Bound on one WebDriver command (a navigation included).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// Bound on chromedriver announcing its port.
const DRIVER_START_LIMIT: Duration = Duration::from_secs(30);
/// Bound on Chromium starting and the session being created.
const SESSION_LIMIT: Duration = Duration::from_secs(90);
/// Pause between two looks while waiting on the page.
const POLL: Duration = Duration::from_millis(50);
/// The window (and so the screenshots), in CSS pixels.
pub const WINDOW: (u32, u32) = (1280, 900);
/// How many lines of chromedriver's output an error quotes.
const OUTPUT_TAIL: usize = 40;
/// How much of one such line it keeps (characters).
const LINE_LIMIT: usize = 500;

/// The shell that leads the process group: it starts chromedriver (its
/// arguments) in the background, then blocks reading its stdin, a pipe
/// whose only writer is the test process; at end of file it kills its
/// group, itself included. The background job's stdin is /dev/null.
const WATCHDOG: &str = r#"exec 2>&1; "$@" & read -r _; kill -9 0"#;

/// One headless Chromium session with its own chromedriver.
pub struct Browser {
    client: Client,
    /// The test's screenshot directory.
    shots: PathBuf,
    /// Screenshots taken so far (their numbering).
    taken: AtomicUsize,
    /// Declared last: dropped after the client, it ends the processes.
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session
    /// (1280x900, `--no-sandbox` since tests run as root, `--disable-gpu`,
    /// `--disable-dev-shm-usage`, a fresh temporary profile dir removed on
    /// drop). Fails with a clear message naming NETRA_CHROMEDRIVER when it
    /// is missing. `test` names the screenshot directory (one per test: the
    /// screenshots of an earlier run of that test are removed here).
    pub async fn start(test: &str) -> anyhow::Result<Browser> {
        let test = file_name(test);
        let chromedriver = binary("NETRA_CHROMEDRIVER", "chromium-driver")?;
        let chromium = binary("NETRA_CHROMIUM", "chromium")?;

        let shots = target_dir().join("screenshots").join(&test);
        match std::fs::remove_dir_all(&shots) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("browser: removing {}", shots.display()));
            }
            _ => {}
        }

        remove_orphaned_dirs();
        let dir = std::env::temp_dir().join(format!(
            "{TEMP_PREFIX}{test}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let home = dir.join("home");
        std::fs::create_dir_all(&home)
            .with_context(|| format!("browser: creating {}", home.display()))?;
        // From here on, the guard removes `dir` (and ends the processes).
        let mut driver = Driver::spawn(&chromedriver, dir)?;
        let port = driver.port().await?;

        let profile = driver.dir.join("profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", profile.display()),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-component-update".into(),
            "--disable-background-networking".into(),
            "--lang=en-US".into(),
        ];
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "implicit": 0, "pageLoad": 60_000, "script": 30_000 },
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let Value::Object(caps) = caps else {
            bail!("browser: capabilities are not an object");
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(caps);
        let client = match tokio::time::timeout(SESSION_LIMIT, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => bail!(
                "browser: chromedriver at {url} did not start a Chromium session ({}): {e}\n{}",
                chromium.display(),
                driver.output_tail()
            ),
            Err(_) => bail!(
                "browser: no Chromium session within {SESSION_LIMIT:?}\n{}",
                driver.output_tail()
            ),
        };
        let browser = Browser {
            client,
            shots,
            taken: AtomicUsize::new(0),
            _driver: driver,
        };
        browser.size_viewport().await?;
        Ok(browser)
    }

    /// Navigates to `url` and waits until it has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        bounded(format!("goto {url}"), self.client.goto(url)).await
    }

    /// Clears the first element matching `css` (an input or a text area),
    /// then types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let el = self.find(css).await?;
        bounded(format!("clear `{css}`"), el.clear()).await?;
        bounded(format!("type into `{css}`"), el.send_keys(text)).await
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let el = self.find(css).await?;
        bounded(format!("click `{css}`"), el.click()).await
    }

    /// The `innerText` of the first element matching `css`; an error when
    /// none matches.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let script = "const e = document.querySelector(arguments[0]);\
                      return e === null ? null : e.innerText;";
        let v = bounded(
            format!("text of `{css}`"),
            self.client.execute(script, vec![json!(css)]),
        )
        .await?;
        match v {
            Value::String(s) => Ok(s),
            Value::Null => bail!("browser: no element matches `{css}`"),
            other => bail!("browser: innerText of `{css}` is not a string: {other}"),
        }
    }

    /// How many elements match `css`.
    pub async fn count(&self, css: &str) -> anyhow::Result<usize> {
        let all = bounded(
            format!("find all `{css}`"),
            self.client.find_all(Locator::Css(css)),
        )
        .await?;
        Ok(all.len())
    }

    /// The page source (the document as it is now, scripts' changes included).
    pub async fn html(&self) -> anyhow::Result<String> {
        bounded("page source", self.client.source()).await
    }

    /// The current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        let url = bounded("current url", self.client.current_url()).await?;
        Ok(url.to_string())
    }

    /// Polls until the first match's text contains `needle`, up to `limit`
    /// (bounded wait, no timing assertion); the error shows the last text
    /// seen. Returns that text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.text(css).await;
            if let Ok(text) = &seen {
                if text.contains(needle) {
                    return Ok(text.clone());
                }
            }
            if Instant::now() >= deadline {
                let last = match seen {
                    Ok(text) => format!("its text was {text:?}"),
                    Err(e) => format!("the last look said: {e:#}"),
                };
                bail!("browser: `{css}` did not contain {needle:?} within {limit:?}; {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Polls until an element matches `css`, up to `limit` (bounded wait,
    /// no timing assertion).
    pub async fn wait_for(&self, css: &str, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.count(css).await;
            if matches!(seen, Ok(n) if n > 0) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let last = match seen {
                    Ok(_) => "nothing matched".to_string(),
                    Err(e) => format!("the last look said: {e:#}"),
                };
                bail!("browser: no element matched `{css}` within {limit:?}; {last}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a PNG to target/screenshots/<test>/<NN>-<name>.png (NN = order
    /// taken), prints the path (println! so `cargo test -- --nocapture` and
    /// the failure output show it), returns it.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = bounded(format!("screenshot {name}"), self.client.screenshot()).await?;
        let n = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        let path = self.shots.join(format!("{n:02}-{}.png", file_name(name)));
        tokio::fs::create_dir_all(&self.shots)
            .await
            .with_context(|| format!("browser: creating {}", self.shots.display()))?;
        tokio::fs::write(&path, png)
            .await
            .with_context(|| format!("browser: writing {}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Runs `js` as the body of a function in the page (`return` gives the
    /// value) and returns its result.
    pub async fn eval(&self, js: &str) -> anyhow::Result<Value> {
        bounded("script", self.client.execute(js, vec![])).await
    }

    /// Ends the session (Chromium quits), then chromedriver; dropping does
    /// the same without the polite part.
    pub async fn close(self) -> anyhow::Result<()> {
        let ended = bounded("end session", self.client.clone().close()).await;
        drop(self);
        ended
    }

    /// Makes the page's viewport [`WINDOW`]: headless Chromium's window
    /// has room for a browser's bars, which `--window-size` counts in.
    async fn size_viewport(&self) -> anyhow::Result<()> {
        let sizes = self
            .eval("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];")
            .await?;
        let extra = |i: usize| {
            sizes
                .get(i)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        bounded(
            "set window size",
            self.client
                .set_window_size(WINDOW.0 + extra(0), WINDOW.1 + extra(1)),
        )
        .await
    }

    async fn find(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        bounded(format!("find `{css}`"), self.client.find(Locator::Css(css))).await
    }
}

/// Runs one WebDriver command, at most [`COMMAND_LIMIT`].
async fn bounded<T>(
    what: impl Display,
    cmd: impl Future<Output = Result<T, CmdError>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(COMMAND_LIMIT, cmd).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(anyhow!("browser: {what}: {e}")),
        Err(_) => Err(anyhow!(
            "browser: {what}: no answer within {COMMAND_LIMIT:?}"
        )),
    }
}

/// chromedriver under its watchdog shell, and the temporary directory
/// (HOME of the processes, and the profile).
struct Driver {
    child: Child,
    /// The watchdog's stdin: dropping it ends the process group.
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    /// chromedriver's output so far (the last lines), for errors.
    output: Arc<Mutex<VecDeque<String>>>,
    port: Option<tokio::sync::oneshot::Receiver<u16>>,
}

impl Driver {
    /// Starts chromedriver (`--port=0`: it picks a free port and prints it).
    fn spawn(chromedriver: &Path, dir: PathBuf) -> anyhow::Result<Driver> {
        let home = dir.join("home");
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("netra-browser")
            .arg(chromedriver)
            .arg("--port=0")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e).context("browser: starting /bin/sh for chromedriver");
            }
        };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let driver = Driver {
            child,
            stdin,
            dir,
            output: output.clone(),
            port: Some(rx),
        };
        let Some(stdout) = stdout else {
            bail!("browser: chromedriver's stdout was not captured");
        };
        // Reads chromedriver's output until the group is gone (so it never
        // blocks on a full pipe), keeping the last lines and sending the port.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text: String = text.trim_end().chars().take(LINE_LIMIT).collect();
                if let Some(port) = announced_port(&text) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(port);
                    }
                }
                if let Ok(mut out) = output.lock() {
                    if out.len() == OUTPUT_TAIL {
                        out.pop_front();
                    }
                    out.push_back(text);
                }
            }
        });
        Ok(driver)
    }

    /// Waits for chromedriver to say which port it listens on.
    async fn port(&mut self) -> anyhow::Result<u16> {
        let rx = self
            .port
            .take()
            .ok_or_else(|| anyhow!("browser: port asked twice"))?;
        match tokio::time::timeout(DRIVER_START_LIMIT, rx).await {
            Ok(Ok(port)) => Ok(port),
            Ok(Err(_)) => bail!(
                "browser: chromedriver exited before it listened\n{}",
                self.output_tail()
            ),
            Err(_) => bail!(
                "browser: chromedriver did not listen within {DRIVER_START_LIMIT:?}\n{}",
                self.output_tail()
            ),
        }
    }

    fn output_tail(&self) -> String {
        let lines = match self.output.lock() {
            Ok(out) => out.iter().cloned().collect::<Vec<_>>(),
            Err(_) => vec![],
        };
        format!("chromedriver's output:\n  {}", lines.join("\n  "))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // End of file for the watchdog: it kills chromedriver, Chromium and itself.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    // The shell is stuck: kill its group ourselves. It leads
                    // the group and is not reaped yet, so the id is still ours.
                    let group = format!("-{}", self.child.id());
                    let _ = Command::new("kill")
                        .args(["-KILL", "--", &group])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        // Chromium's crash handler (not in the group) may still write into
        // the profile for a moment after the browser is gone.
        for _ in 0..50 {
            match std::fs::remove_dir_all(&self.dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ if self.dir.exists() => std::thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
    }
}

/// The temporary directories' names: this, the test's name, the test
/// process's id, a UUID.
const TEMP_PREFIX: &str = "netra-browser-";

/// Removes the temporary directories of browsers whose test process is
/// gone without dropping them (killed: its processes died with it, see
/// the module doc, but nobody removed the directory).
fn remove_orphaned_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(id), Some(pid), Some(_test)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let ours = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if ours && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(tmp.join(&name));
        }
    }
}

/// The port in chromedriver's "ChromeDriver was started successfully on port N." line.
fn announced_port(line: &str) -> Option<u16> {
    let (_, rest) = line.split_once("started successfully on port ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The executable named by the environment variable `var` (or by that
/// entry of `.local/stack/netra.env`).
fn binary(var: &str, package: &str) -> anyhow::Result<PathBuf> {
    let value = std::env::var(var).ok().or_else(|| from_stack_env(var));
    check_binary(var, value.as_deref(), package)
}

/// `value`, the value of `var`, as the path of an executable, or an error
/// that names `var` and says how to install Debian's `package` and set it.
pub fn check_binary(var: &str, value: Option<&str>, package: &str) -> anyhow::Result<PathBuf> {
    let hint = format!(
        "`deploy/local/stack start` installs Debian's {package} package, and \
         `eval \"$(deploy/local/stack env)\"` sets {var}"
    );
    let Some(value) = value else {
        bail!("browser: {var} is not set (nor in .local/stack/netra.env): {hint}");
    };
    let path = PathBuf::from(value);
    let executable = std::fs::metadata(&path)
        .map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        })
        .unwrap_or(false);
    if !path.is_absolute() || !executable {
        bail!("browser: {var}={value} is not an executable file: {hint}");
    }
    Ok(path)
}

/// `var` from `.local/stack/netra.env`, if that file has it.
fn from_stack_env(var: &str) -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/stack/netra.env");
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches("export ").trim();
        let (k, v) = line.split_once('=')?;
        (k == var).then(|| v.trim().trim_matches('\'').trim_matches('"').to_string())
    })
}

/// Cargo's target directory: CARGO_TARGET_DIR when set (relative to the
/// workspace, where cargo runs the tests), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir),
        _ => workspace.join("target"),
    }
}

/// `name` with anything but letters, digits, `-` and `_` replaced by `_`.
fn file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "browser".into()
    } else {
        clean
    }
}
