//! The bot's side of the Graph API, as the driver uses it: a token, calls placed to a sim user who
//! answers at once, transfers to another one, and reads.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::http::Conn;
use crate::sink::Sink;

pub const TENANT: &str = "aaaaaaaa-0000-4000-8000-000000000001";
pub const APP: &str = "cccccccc-0000-4000-8000-000000000003";
pub const HEIDI: &str = "550fae72-d251-43ec-868c-373732c2704f";
pub const ALEX: &str = "751f6800-3180-414d-bd94-333364659951";
const ADMIN: &str = "X-Sim-Admin-Key: switchboard-demo-admin\r\n";
/// How long the driver waits for a notification before it counts the call as failed.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What every driver task shares: where the server is, the bot's token, where the sink listens.
pub struct Bot {
    pub server: SocketAddr,
    /// `Authorization: Bearer …\r\nContent-Type: application/json\r\n`
    pub headers: String,
    pub create_body: Vec<u8>,
    pub transfer_body: Vec<u8>,
    pub sink: Arc<Sink>,
}

impl Bot {
    /// Gets the demo bot a token and makes both sim users answer at once.
    pub async fn new(server: SocketAddr, sink: Arc<Sink>, sink_addr: SocketAddr) -> anyhow::Result<Bot> {
        let mut conn = Conn::new(server);
        let form = format!(
            "grant_type=client_credentials&client_id={APP}&client_secret=switchboard-demo-secret&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"
        );
        let r = conn
            .send("POST", &format!("/{TENANT}/oauth2/v2.0/token"), "Content-Type: application/x-www-form-urlencoded\r\n", form.as_bytes())
            .await?;
        if r.status != 200 {
            bail!("token request answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        let token = v["access_token"].as_str().context("no access_token")?;
        // Heidi, called by the bot, stays until the call ends; Alex, the transfer target, talks with
        // the transferee for a second and hangs up, as people do (the sim would keep every finished
        // transfer's conversation otherwise, tens of thousands of them in a full run).
        let behaviours: [(&str, &[u8]); 2] =
            [(HEIDI, br#"{"kind":"answer","after_ms":0}"#), (ALEX, br#"{"kind":"answer","after_ms":0,"hang_up_after_ms":1000}"#)];
        for (user, behaviour) in behaviours {
            let r = conn
                .send("PUT", &format!("/sim/v1/parties/{user}/behaviour"), &format!("{ADMIN}Content-Type: application/json\r\n"), behaviour)
                .await?;
            if r.status >= 300 {
                bail!("setting {user}'s behaviour answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
            }
        }
        let create_body = serde_json::json!({
            "@odata.type": "#microsoft.graph.call",
            "callbackUri": format!("http://{sink_addr}/cb"),
            "mediaConfig": {"@odata.type": "#microsoft.graph.serviceHostedMediaConfig"},
            "requestedModalities": ["audio"],
            "targets": [{"@odata.type": "#microsoft.graph.invitationParticipantInfo", "identity": {"user": {"id": HEIDI}}}]
        });
        let transfer_body = serde_json::json!({"transferTarget": {"identity": {"user": {"id": ALEX}}}});
        Ok(Bot {
            server,
            headers: format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
            create_body: serde_json::to_vec(&create_body)?,
            transfer_body: serde_json::to_vec(&transfer_body)?,
            sink,
        })
    }

    /// Places a call; returns its id (the answer is 201).
    pub async fn place(&self, conn: &mut Conn) -> anyhow::Result<String> {
        let r = conn.send("POST", "/v1.0/communications/calls", &self.headers, &self.create_body).await?;
        if r.status != 201 {
            bail!("create call answered {}: {}", r.status, String::from_utf8_lossy(&r.body));
        }
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
        }
        Ok(serde_json::from_slice::<Created>(&r.body)?.id)
    }

    /// Places a call and waits until the bot is told it is established.
    pub async fn established(&self, conn: &mut Conn) -> anyhow::Result<String> {
        let id = self.place(conn).await?;
        self.sink.wait(&id, "established", PATIENCE).await?;
        self.sink.forget(&id);
        Ok(id)
    }

    /// Asks for a blind transfer to Alex; Ok(status).
    pub async fn transfer(&self, conn: &mut Conn, id: &str) -> anyhow::Result<u16> {
        Ok(conn.send("POST", &format!("/v1.0/communications/calls/{id}/transfer"), &self.headers, &self.transfer_body).await?.status)
    }

    pub fn get_path(id: &str) -> String {
        format!("/v1.0/communications/calls/{id}")
    }
}
