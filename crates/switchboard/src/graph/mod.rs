//! Graph's wire format: lenient parsing of request bodies and exact rendering of resources and
//! notifications, in the dialect each app gets ([`Format`], decided here and nowhere else).

pub mod decode;
pub mod parse;
pub mod render;

use std::sync::Arc;

use switchboard_core::call::{Call, ChangeType, Notification};
use switchboard_engine::directory::{Application, Directory, NotificationFormat};
use switchboard_engine::engine::Render;
use switchboard_engine::store::NewNotification;

/// The dialect of Graph an app speaks: today's, or the 2018 beta's (operation-style transfer
/// progress, an untyped envelope, string codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Today,
    Beta2018,
}

impl Format {
    /// The one place that decides: the app's `notification_format` in the directory. An app the
    /// directory no longer knows gets today's.
    pub fn of(app: Option<&Application>) -> Format {
        match app.map(|a| a.notification_format) {
            Some(NotificationFormat::Beta2018) => Format::Beta2018,
            Some(NotificationFormat::Graph) | None => Format::Today,
        }
    }
}

/// The engine's [`Render`] for Graph: each notification in the app's dialect, addressed to the call's
/// callback or else the app's calling webhook.
pub struct GraphRender {
    pub directory: Arc<Directory>,
    /// The server's public URL, for recordings' `recordingLocation`.
    pub base_url: String,
}

impl Render for GraphRender {
    fn render(&self, call: &Call, notifications: &[&Notification], version: u64) -> Vec<NewNotification> {
        let app = self.directory.app(&call.app_id);
        let format = Format::of(app);
        let Some(callback) = call.callback_uri.clone().or_else(|| app.and_then(|a| a.calling_webhook.clone())) else {
            tracing::error!(call_id = call.id, app_id = call.app_id, "no callback and no calling webhook: notifications dropped");
            return Vec::new();
        };
        // The bot's own participant, only for roster updates.
        let me = notifications
            .iter()
            .any(|n| n.roster)
            .then(|| self.directory.bot_party(&call.app_id, call.application_instance.as_deref()))
            .flatten();
        let mut bodies = Vec::with_capacity(notifications.len());
        for n in notifications {
            match format {
                Format::Today => bodies.push(render::notification(call, n, me.as_ref(), &self.base_url)),
                // A call that ends mid-transfer: the 2018 bot waits on its operation, so the operation
                // ends (failed) before the call's `deleted`.
                Format::Beta2018 if n.change == ChangeType::Deleted && n.operation.is_some() && !n.on_operation => {
                    bodies.extend(render::notification_2018(call, n, version, me.as_ref(), &self.base_url));
                    let call_side = Notification { operation: None, ..(*n).clone() };
                    bodies.extend(render::notification_2018(call, &call_side, version, me.as_ref(), &self.base_url));
                }
                Format::Beta2018 => bodies.extend(render::notification_2018(call, n, version, me.as_ref(), &self.base_url)),
            }
        }
        bodies.into_iter().map(|body| NewNotification { callback: callback.clone(), body: body.to_string() }).collect()
    }
}
