//! The docker executor's images: which image a job runs in, and making it
//! when it is missing — pulling a named image, building a Dockerfile
//! environment or a task's image (from its context tree or its Git commit),
//! and deriving `FROM image` + `pip install -r requirements.txt` images.
//! Also the builds themselves (with the optional obfuscation pass and its
//! check), which build jobs share (see `build_job`).
//!
//! Every made image is tagged by a hash of what defines it
//! ([`ImageBuild::tag`], or `podder-env:<hash>` for derived images), so it
//! is made once per engine and found by every later job; a per-tag lock
//! makes concurrent jobs build it once. Build output goes to the job's log
//! as system lines, without terminal escapes ([`terminal_text`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use podder_core::api::Lease;
use podder_core::env::GitSource;
use podder_core::task::TaskSpec;
use podder_core::{EnvSpec, ImageBuild};
use podder_docker::{BuildSpec, ContainerSpec, Context, DockerError, Dockerfile, Engine};
use tokio::process::Command;

use crate::logs::LogSink;
use crate::prepare::remove_tree;
use crate::venv::has_requirements;
use crate::{LABEL_AGENT, Shared};

/// How long a `git` command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);

/// A failure while making a job's environment (the job fails with it).
#[derive(Debug)]
pub(crate) struct EnvError(pub String);

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvError {}

/// The Docker engine of a docker agent, and its image locks.
pub(crate) struct Images {
    pub engine: Engine,
    /// What job containers' `NetworkMode` names (see
    /// [`NetworkMode::ensure`](crate::docker_exec::NetworkMode::ensure)).
    pub network: String,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Images {
    /// Connects to the local engine and removes the containers a previous
    /// run of agent `agent` left (it crashed, or was killed).
    pub(crate) async fn connect(agent: &str) -> anyhow::Result<Images> {
        let engine = Engine::connect().await.context("the docker executor needs the Docker engine")?;
        let mode = crate::docker_exec::network_mode();
        let network = mode.ensure(&engine).await?;
        let orphans = engine.remove_by_label(LABEL_AGENT, agent).await?;
        if !orphans.is_empty() {
            tracing::warn!(agent, count = orphans.len(), containers = ?orphans,
                "removed containers left by an earlier run of this agent");
        }
        tracing::info!(api = engine.api_version(), network = mode.engine_name(), "connected to the Docker engine");
        Ok(Images { engine, network, locks: Mutex::new(HashMap::new()) })
    }

    /// Runs `f` holding the lock of `tag`.
    async fn locked<T>(&self, tag: &str, f: impl Future<Output = T>) -> T {
        let lock = self.locks.lock().expect("image locks").entry(tag.to_string()).or_default().clone();
        let out = {
            let _guard = lock.lock().await;
            f.await
        };
        drop(lock);
        self.locks.lock().expect("image locks").retain(|_, l| Arc::strong_count(l) > 1);
        out
    }

    /// The image a job runs in, made or pulled first when missing.
    pub(crate) async fn image_for(
        &self,
        shared: &Shared,
        lease: &Lease,
        scratch: &Path,
        log: &LogSink,
    ) -> anyhow::Result<String> {
        let spec = &lease.job.spec;
        let gpus = lease.job.gpus.len().max(spec.resources.gpus as usize) as u32;
        let default = &shared.config.default_image;
        let Some(env) = &spec.environment else {
            self.present(default, log).await?;
            return Ok(default.clone());
        };
        if let Some(build) = &env.build {
            return self.built(shared, env, build, scratch, log).await;
        }
        let base = env.image_for(gpus).unwrap_or_else(|| default.clone());
        self.present(&base, log).await?;
        match env.requirements.as_deref() {
            Some(req) if has_requirements(req) => self.derived(&base, req, scratch, log).await,
            _ => Ok(base),
        }
    }

    /// Makes sure `image` is on the engine, pulling it when it is not.
    async fn present(&self, image: &str, log: &LogSink) -> anyhow::Result<()> {
        if self.engine.image_exists(image).await? {
            return Ok(());
        }
        self.locked(image, async {
            if self.engine.image_exists(image).await? {
                return Ok(());
            }
            log.system(format!("environment: the image {image} is not on this agent: pulling it")).await;
            match self.engine.pull(image, |_| {}).await {
                Ok(()) => Ok(()),
                Err(DockerError::Pull { message, .. }) => Err(EnvError(format!(
                    "the image '{image}' does not exist on this agent's Docker engine and could not be pulled ({message})"
                ))
                .into()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The image of an environment with a build (a Dockerfile environment
    /// or a task), built when its tag is missing.
    async fn built(
        &self,
        shared: &Shared,
        env: &EnvSpec,
        build: &ImageBuild,
        scratch: &Path,
        log: &LogSink,
    ) -> anyhow::Result<String> {
        let tag = build.tag();
        if self.engine.image_exists(&tag).await? {
            log.system(format!("environment: image {tag} of {} (cached)", env.name)).await;
            return Ok(tag);
        }
        self.locked(&tag, async {
            if self.engine.image_exists(&tag).await? {
                log.system(format!("environment: image {tag} of {} (cached)", env.name)).await;
                return Ok(tag.clone());
            }
            log.system(format!("environment: building image {tag} of {}", env.name)).await;
            let res = async {
                if build.context.is_none() && build.git.is_none() {
                    let text = build.dockerfile.clone().ok_or_else(|| {
                        EnvError("the environment has neither a Dockerfile nor a build context".into())
                    })?;
                    self.build(Context::Empty, Dockerfile::Text(text), &tag, log).await?;
                    return anyhow::Ok(());
                }
                let ctx = scratch.join("context");
                let mut b = build.clone();
                fetch_context(shared, &mut b, None, &ctx, log).await?;
                let workdir = match &env.workdir {
                    Some(w) => w.clone(),
                    None => read_task(&ctx).map(|(t, _)| t.workdir).unwrap_or_else(|_| "/task".into()),
                };
                self.build_context(&ctx, &b, &tag, &workdir, log).await?;
                Ok(())
            }
            .await;
            match res {
                Ok(()) => Ok(tag.clone()),
                Err(e) => Err(EnvError(format!("environment build failed: {e:#}")).into()),
            }
        })
        .await
    }

    /// `FROM base` with the requirements pip-installed, built once.
    async fn derived(&self, base: &str, requirements: &str, scratch: &Path, log: &LogSink) -> anyhow::Result<String> {
        let mut h = blake3::Hasher::new();
        h.update(b"podder-derived-v1\0");
        h.update(base.as_bytes());
        h.update(b"\0");
        h.update(requirements.as_bytes());
        let tag = format!("podder-env:{}", &h.finalize().to_hex()[..20]);
        if self.engine.image_exists(&tag).await? {
            log.system(format!("environment: image {tag} ({base} with the requirements, cached)")).await;
            return Ok(tag);
        }
        self.locked(&tag, async {
            if self.engine.image_exists(&tag).await? {
                return Ok(tag.clone());
            }
            log.system(format!("environment: building image {tag}: {base} with the requirements")).await;
            let ctx = scratch.join("requirements");
            std::fs::create_dir_all(&ctx)?;
            std::fs::write(ctx.join("requirements.txt"), requirements)?;
            let user = self.engine.image_user(base).await?;
            let mut text = format!(
                "FROM {base}\nUSER root\nCOPY requirements.txt /tmp/podder-requirements.txt\n\
                 RUN export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 && \
                 if command -v pip >/dev/null 2>&1; then pip install --no-cache-dir -r /tmp/podder-requirements.txt; \
                 else python3 -m pip install --no-cache-dir -r /tmp/podder-requirements.txt; fi && \
                 rm -f /tmp/podder-requirements.txt\n"
            );
            if !user.is_empty() {
                text.push_str(&format!("USER {user}\n"));
            }
            match self.build(Context::Dir(ctx), Dockerfile::Text(text), &tag, log).await {
                Ok(_) => Ok(tag.clone()),
                Err(e) => Err(EnvError(format!("environment build failed: {e}")).into()),
            }
        })
        .await
    }

    /// One engine build, its output into the log. Returns the image id.
    pub(crate) async fn build(
        &self,
        context: Context,
        dockerfile: Dockerfile,
        tag: &str,
        log: &LogSink,
    ) -> Result<String, DockerError> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let spec = BuildSpec {
            context,
            dockerfile,
            tag: tag.to_string(),
            labels: BTreeMap::from([("podder.build".to_string(), tag.to_string())]),
        };
        let build = self.engine.build_image(spec, move |l| {
            let _ = tx.send(l.to_string());
        });
        // Build steps write for a terminal (colours, progress bars redrawn
        // with \r): the log keeps what a terminal would have shown last.
        let forward = async {
            while let Some(l) = rx.recv().await {
                let text = terminal_text(&l);
                if !text.trim().is_empty() || l.trim().is_empty() {
                    log.system(text).await;
                }
            }
        };
        let (res, ()) = tokio::join!(build, forward);
        res.map_err(|e| match e {
            DockerError::Build { tag, message, log } => DockerError::Build {
                tag,
                message: terminal_text(&message),
                log: log.iter().map(|l| terminal_text(l)).collect(),
            },
            other => other,
        })
    }

    /// Builds the image of a context directory as `build` says (its
    /// Dockerfile, or the given text; with the obfuscation pass and its
    /// check), tagged `tag`. Returns the image id.
    pub(crate) async fn build_context(
        &self,
        ctx: &Path,
        build: &ImageBuild,
        tag: &str,
        workdir: &str,
        log: &LogSink,
    ) -> anyhow::Result<String> {
        let dockerfile = match &build.dockerfile {
            Some(text) => Dockerfile::Text(text.clone()),
            None => {
                anyhow::ensure!(
                    ctx.join("Dockerfile").is_file(),
                    "the build context has no Dockerfile: add one (podder task new writes one)"
                );
                Dockerfile::Path("Dockerfile".into())
            }
        };
        if !build.obfuscate {
            return Ok(self.build(Context::Dir(ctx.to_path_buf()), dockerfile, tag, log).await?);
        }
        // Three builds, so that no layer of the shipped image ever held the
        // sources (a `RUN rm` on top of them would only hide them under a
        // whiteout): the Dockerfile with the whole context (the sources'
        // layout), the Dockerfile with a context without any `.py` file
        // (the shipped image's layers), and a multi-stage build that
        // compiles the first one's workdir and copies only that onto the
        // second.
        let source_tag = format!("{tag}-source");
        let base_tag = format!("{tag}-base");
        let source = self.build(Context::Dir(ctx.to_path_buf()), dockerfile.clone(), &source_tag, log).await?;
        let bare = ctx.with_file_name(format!(
            "{}-without-sources",
            ctx.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "context".into())
        ));
        let res = async {
            {
                let (from, to) = (ctx.to_path_buf(), bare.clone());
                tokio::task::spawn_blocking(move || copy_without_sources(&from, &to)).await??;
            }
            log.system("obfuscating: building the image again from the context without its .py files").await;
            let base = self.build(Context::Dir(bare.clone()), dockerfile, &base_tag, log).await.map_err(|e| {
                anyhow::anyhow!(
                    "{e}; an obfuscated build runs the Dockerfile once without the context's .py files \
                     (they reach the image only as bytecode, copied into {workdir}): copy the code with \
                     COPY . {workdir} and do not use it in RUN steps"
                )
            })?;
            log.system(format!("obfuscating: compiling the Python sources under {workdir} to bytecode")).await;
            let text = obfuscating_dockerfile(&source, &base, workdir);
            anyhow::Ok(self.build(Context::Empty, Dockerfile::Text(text), tag, log).await?)
        }
        .await;
        let _ = remove_tree(&bare);
        // The intermediate images stay only as the engine's build cache.
        let _ = self.engine.remove_image(&source_tag).await;
        let _ = self.engine.remove_image(&base_tag).await;
        let id = res?;
        let w = crate::sandbox::shell_quote(workdir);
        let check = ContainerSpec {
            image: tag.to_string(),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: vec![format!("find {w} -name '*.py' -print")],
            user: Some("0:0".into()),
            network: Some("none".into()),
            ..Default::default()
        };
        let (code, out) = self.engine.run_capture(&check).await?;
        let left: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        if code != 0 || !left.is_empty() {
            let _ = self.engine.remove_image(tag).await;
            if code != 0 {
                anyhow::bail!("cannot check the obfuscated image for Python sources (exit code {code}): {out}");
            }
            anyhow::bail!("the obfuscated image still holds Python sources: {}", left.join(", "));
        }
        log.system(format!(
            "obfuscating: checked, no .py file is left under {workdir}, and no layer was built from the sources"
        ))
        .await;
        Ok(id)
    }
}

/// The last build of an obfuscated image: stage `src` compiles the
/// workdir of `source` (the Dockerfile's image with the sources) to legacy
/// `.pyc` files beside each module (`-OO`: docstrings stripped) and deletes
/// every `.py` and `__pycache__`; the final stage is `base` (the same
/// Dockerfile built without the sources) with only that workdir copied in.
fn obfuscating_dockerfile(source: &str, base: &str, workdir: &str) -> String {
    let w = crate::sandbox::shell_quote(workdir);
    // COPY takes JSON arrays, so a workdir with spaces stays one path.
    let dir = serde_json::to_string(workdir).expect("a string");
    format!(
        "FROM {source} AS src\nUSER root\nRUN python3 -OO -m compileall -b -q {w} && find {w} -name '*.py' -delete && \
         find {w} -name __pycache__ -prune -exec rm -rf {{}} +\nFROM {base}\nCOPY --from=src [{dir}, {dir}]\n"
    )
}

/// Copies the build context `from` to `to` without its Python sources:
/// every `*.py` file and `__pycache__` directory is left out (files are
/// hard links when they can be).
fn copy_without_sources(from: &Path, to: &Path) -> std::io::Result<()> {
    if to.exists() {
        remove_tree(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, name) = (entry.path(), entry.file_name());
        let dest = to.join(&name);
        let t = entry.file_type()?;
        if t.is_dir() {
            if name != "__pycache__" {
                copy_without_sources(&src, &dest)?;
            }
        } else if Path::new(&name).extension().is_some_and(|e| e == "py") {
            continue;
        } else if t.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dest)?;
        } else if std::fs::hard_link(&src, &dest).is_err() {
            std::fs::copy(&src, &dest)?;
        }
    }
    Ok(())
}

/// Puts a build's context into `dest`: its Git repository at the commit
/// (recording the commit into `build.git`), else the context tree (or
/// `code` when the build names none).
pub(crate) async fn fetch_context(
    shared: &Shared,
    build: &mut ImageBuild,
    code: Option<podder_core::ManifestId>,
    dest: &Path,
    log: &LogSink,
) -> anyhow::Result<()> {
    if dest.exists() {
        remove_tree(dest)?;
    }
    if let Some(git) = &mut build.git {
        return git_checkout(git, dest, log).await;
    }
    let id = build.context.or(code).context("the build has neither a context nor a Git source")?;
    shared.workspace.materialize_code(&shared.client, &id, dest).await
}

/// Clones `git.url` into `dest` and checks out the recorded commit (or the
/// reference); records the commit. The `.git` directory is removed.
async fn git_checkout(git: &mut GitSource, dest: &Path, log: &LogSink) -> anyhow::Result<()> {
    let want = git.commit.clone().unwrap_or_else(|| git.reference.clone());
    log.system(format!("git: cloning {} at {want}", git.url)).await;
    let d = dest.to_string_lossy().into_owned();
    run_git(&["clone", "--quiet", "--", &git.url, &d], None).await?;
    let mut sha = None;
    for candidate in [format!("{want}^{{commit}}"), format!("origin/{want}^{{commit}}")] {
        if let Ok(s) = run_git(&["rev-parse", "--verify", "--quiet", &candidate], Some(dest)).await {
            sha = Some(s);
            break;
        }
    }
    let sha = sha.with_context(|| format!("{} has no branch, tag or commit '{want}'", git.url))?;
    run_git(&["checkout", "--quiet", "--detach", &sha], Some(dest)).await?;
    let head = run_git(&["rev-parse", "HEAD"], Some(dest)).await?;
    if let Some(c) = &git.commit {
        anyhow::ensure!(c == &head, "{} checked out {head}, not the recorded commit {c}", git.url);
    }
    log.system(format!("git: commit {head}")).await;
    git.commit = Some(head);
    remove_tree(&dest.join(".git"))?;
    Ok(())
}

async fn run_git(args: &[&str], dir: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0").stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(GIT_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("git {} took longer than {GIT_TIMEOUT:?}", args[0]))?
        .context("cannot run git: install it on the agent's machine")?;
    anyhow::ensure!(
        out.status.success(),
        "git {} failed ({}): {}",
        args[0],
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Reads and checks the context's `task.yaml`; answers it and its text.
pub(crate) fn read_task(ctx: &Path) -> Result<(TaskSpec, String), EnvError> {
    let text = std::fs::read_to_string(ctx.join("task.yaml")).map_err(|e| {
        EnvError(format!("task.yaml: cannot read it ({e}); a task directory needs one (podder task new writes one)"))
    })?;
    let spec = TaskSpec::from_yaml(&text, "task.yaml").map_err(|e| EnvError(e.to_string()))?;
    Ok((spec, text))
}

/// What a terminal would show for one line of output: escape sequences
/// removed (CSI `ESC [ ... X` — colours, cursor moves, erasing —, OSC
/// `ESC ] ... BEL` or `... ESC \` — titles, hyperlinks —, the other string
/// sequences, and two- or three-byte `ESC` sequences, also in their 8-bit
/// C1 forms), a carriage return's redraw keeping only what came after the
/// last one (a progress bar's last state; a trailing one changes nothing),
/// backspaces applied, and other control characters dropped (tabs stay).
pub(crate) fn terminal_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    let mut redraw = false;
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // nF: intermediates, then one final byte (e.g. `ESC ( B`).
                Some('\x20'..='\x2f') => {
                    for n in chars.by_ref() {
                        if !('\x20'..='\x2f').contains(&n) {
                            break;
                        }
                    }
                }
                // Fe, Fp, Fs: `ESC` and one byte (or a lone `ESC` at the end).
                _ => {}
            },
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            '\r' => redraw = true,
            '\x08' => {
                out.pop();
            }
            '\t' => {
                if std::mem::take(&mut redraw) {
                    out.clear();
                }
                out.push(c);
            }
            c if c.is_control() => {}
            c => {
                if std::mem::take(&mut redraw) {
                    out.clear();
                }
                out.push(c);
            }
        }
    }
    out
}

/// Skips a CSI sequence's parameter and intermediate bytes and its final
/// byte; stops early (keeping the character) at anything else.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(&c) = chars.peek() {
        match c {
            '\x20'..='\x3f' => {
                chars.next();
            }
            '\x40'..='\x7e' => {
                chars.next();
                return;
            }
            _ => return,
        }
    }
}

/// Skips an OSC (or DCS, SOS, PM, APC) string up to its terminator: BEL,
/// `ESC \` or the C1 ST; an unterminated one runs to the end of the line.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\x07' | '\u{9c}' => return,
            '\x1b' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_cursor_sequences_are_removed() {
        assert_eq!(terminal_text("\x1b[1m\x1b[31mERROR\x1b[0m: no such file"), "ERROR: no such file");
        assert_eq!(terminal_text("\x1b[38;5;196mred\x1b[39m \x1b[2K\x1b[1A\x1b[?25lup"), "red up");
        assert_eq!(terminal_text("\u{9b}32mgreen\u{9b}0m"), "green");
        assert_eq!(terminal_text("\x1b(Bcharset \x1b=keypad \x1bMreverse"), "charset keypad reverse");
        assert_eq!(terminal_text("cut off \x1b"), "cut off ");
        assert_eq!(terminal_text("cut off \x1b[12"), "cut off ");
    }

    #[test]
    fn osc_strings_are_removed_whatever_ends_them() {
        assert_eq!(terminal_text("\x1b]0;window title\x07Step 1/3 : FROM x"), "Step 1/3 : FROM x");
        assert_eq!(
            terminal_text("see \x1b]8;;https://example.com\x1b\\the docs\x1b]8;;\x1b\\ now"),
            "see the docs now"
        );
        assert_eq!(terminal_text("\x1bPdevice control\x1b\\kept"), "kept");
        assert_eq!(terminal_text("title \x1b]2;never ended"), "title ");
    }

    #[test]
    fn carriage_return_redraws_keep_the_last_state() {
        assert_eq!(terminal_text("  10% |##      |\r  50% |####    |\r 100% |########|"), " 100% |########|");
        assert_eq!(terminal_text("Downloading\x1b[K\rDownloaded"), "Downloaded");
        assert_eq!(terminal_text("done\r"), "done", "a trailing carriage return redraws nothing");
        assert_eq!(terminal_text("done\r\x1b[K"), "done");
        assert_eq!(terminal_text("spin|\x08/\x08-"), "spin-");
        assert_eq!(terminal_text("\x08\x08start"), "start");
    }

    #[test]
    fn plain_text_is_unchanged() {
        for s in ["", "Step 2/5 : RUN pip install -r requirements.txt", "héllo ✓ 日本", "a\tb", "50% [ok]"] {
            assert_eq!(terminal_text(s), s);
        }
        assert_eq!(terminal_text("bell\x07 and nul\0 dropped"), "bell and nul dropped");
    }
}
