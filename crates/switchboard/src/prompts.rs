//! Where SIP prompts come from: `playPrompt`'s `mediaInfo.uri`, read for the SIP backend. A
//! `file://` path must lie in the data folder's `prompts/` (bots name files, they do not roam the
//! disk); an `http(s)` URL is fetched as a notification is sent: under the callback policy, with every
//! address DNS gives checked, no proxy, no redirects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::callback::{self, CallbackPolicy};

/// The largest prompt file taken (about 17 minutes of 8 kHz 16-bit audio).
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long fetching one prompt may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PromptLoader {
    client: reqwest::Client,
    policy: Arc<CallbackPolicy>,
    /// `file://` prompts must be in here.
    dir: PathBuf,
}

impl PromptLoader {
    pub fn new(policy: Arc<CallbackPolicy>, data_dir: &Path) -> Result<PromptLoader, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(callback::Resolver(Arc::clone(&policy))))
            .build()?;
        Ok(PromptLoader { client, policy, dir: data_dir.join("prompts") })
    }

    async fn bytes(&self, uri: &str) -> Result<Vec<u8>, String> {
        if let Some(path) = uri.strip_prefix("file://") {
            let dir = self.dir.clone();
            let path = path.to_owned();
            return tokio::task::spawn_blocking(move || read_prompt(&dir, &path)).await.map_err(|e| e.to_string())?;
        }
        self.policy.check(uri).map_err(|problem| format!("the URL {problem}"))?;
        let resp = self.client.get(uri).send().await.map_err(|e| format!("cannot fetch it: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("fetching it answered {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        // Read in chunks, stopping past the limit (a body of unknown length could be endless).
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("cannot fetch it: {}", e.without_url()))? {
            if body.len() + chunk.len() > MAX_BYTES {
                return Err(format!("larger than {MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// A `file://` prompt: a regular file inside `dir` (after symlinks), opened once and read up to the
/// limit (what is checked is what is read).
fn read_prompt(dir: &Path, path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let dir = dir.canonicalize().map_err(|_| format!("no prompts folder at {}", dir.display()))?;
    let file = Path::new(path).canonicalize().map_err(|e| format!("cannot read {path}: {e}"))?;
    if !file.starts_with(&dir) {
        return Err(format!("file prompts must be in {}", dir.display()));
    }
    let handle = std::fs::File::open(&file).map_err(|e| format!("cannot read {path}: {e}"))?;
    let meta = handle.metadata().map_err(|e| format!("cannot read {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    let mut bytes = Vec::new();
    handle.take(MAX_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read {path}: {e}"))?;
    if bytes.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes"));
    }
    Ok(bytes)
}

impl switchboard_sip::network::Prompts for PromptLoader {
    fn load(&self, uri: String) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<i16>, String>> + Send>> {
        let (client, policy, dir) = (self.client.clone(), Arc::clone(&self.policy), self.dir.clone());
        Box::pin(async move {
            let loader = PromptLoader { client, policy, dir };
            let bytes = loader.bytes(&uri).await?;
            switchboard_sip::wav::decode(&bytes)
        })
    }
}
