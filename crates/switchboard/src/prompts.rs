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
            let dir = self.dir.canonicalize().map_err(|_| format!("no prompts folder at {}", self.dir.display()))?;
            let file = Path::new(path).canonicalize().map_err(|e| format!("cannot read {path}: {e}"))?;
            if !file.starts_with(&dir) {
                return Err(format!("file prompts must be in {}", dir.display()));
            }
            let meta = std::fs::metadata(&file).map_err(|e| format!("cannot read {path}: {e}"))?;
            if meta.len() > MAX_BYTES as u64 {
                return Err(format!("{} bytes; at most {MAX_BYTES} are taken", meta.len()));
            }
            let read = tokio::task::spawn_blocking(move || std::fs::read(file)).await.map_err(|e| e.to_string())?;
            return read.map_err(|e| format!("cannot read {path}: {e}"));
        }
        self.policy.check(uri).map_err(|problem| format!("the URL {problem}"))?;
        let resp = self.client.get(uri).send().await.map_err(|e| format!("cannot fetch it: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("fetching it answered {}", resp.status().as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_BYTES as u64) {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        let body = resp.bytes().await.map_err(|e| format!("cannot fetch it: {}", e.without_url()))?;
        if body.len() > MAX_BYTES {
            return Err(format!("larger than {MAX_BYTES} bytes"));
        }
        Ok(body.to_vec())
    }
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
