//! What every handler and the dispatcher share.

use crate::auth::Authenticator;
use crate::config::Config;
use crate::destination_cache::DestinationCache;
use crate::dispatch::DispatchContext;
use herald_channels::Channels;
use herald_core::audit::CheckpointSigner;
use herald_core::crypto::SecretBox;
use herald_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<SecretBox>,
    pub channels: Channels,
    pub destinations: Arc<DestinationCache>,
    /// The dispatcher and what it works with (the same store, cache and channels).
    pub dispatch: DispatchContext,
    pub auth: Arc<Authenticator>,
    /// Signs audit checkpoints.
    pub signer: Arc<CheckpointSigner>,
    pub config: Arc<Config>,
    /// Tenants' message quotas on this node.
    pub quotas: Arc<crate::tenants::Quotas>,
}
