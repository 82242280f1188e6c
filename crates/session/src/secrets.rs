//! `moby.buildkit.secrets.v1.Secrets`: the client hands secrets to the daemon by id
//! (for `RUN --mount=type=secret`).

use std::collections::HashMap;
use std::sync::Arc;

use proto::secrets::secrets_client::SecretsClient;
use proto::secrets::secrets_server::{Secrets, SecretsServer};
use proto::secrets::{GetSecretRequest, GetSecretResponse};
use tonic::{Code, Request, Response, Status};

use crate::Error;
use crate::client::{Attachable, MAX_MESSAGE_SIZE, Services};
use crate::manager::Caller;

/// The method the daemon calls.
pub const GET_SECRET_METHOD: &str = "/moby.buildkit.secrets.v1.Secrets/GetSecret";

/// Serves secrets from memory.
#[derive(Clone, Default)]
pub struct SecretsProvider {
    secrets: Arc<HashMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for SecretsProvider {
    // Never print the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<_> = self.secrets.keys().collect();
        ids.sort();
        f.debug_struct("SecretsProvider")
            .field("ids", &ids)
            .finish()
    }
}

impl SecretsProvider {
    /// Serves each `(id, value)`.
    pub fn new<I, V>(secrets: impl IntoIterator<Item = (I, V)>) -> SecretsProvider
    where
        I: Into<String>,
        V: Into<Vec<u8>>,
    {
        let secrets = secrets
            .into_iter()
            .map(|(id, v)| (id.into(), v.into()))
            .collect();
        SecretsProvider {
            secrets: Arc::new(secrets),
        }
    }
}

impl Attachable for SecretsProvider {
    fn register(self: Box<Self>, services: &mut Services) {
        services.add(SecretsServer::new(*self), &["GetSecret"]);
    }
}

#[tonic::async_trait]
impl Secrets for SecretsProvider {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = &request.get_ref().id;
        match self.secrets.get(id) {
            Some(data) => Ok(Response::new(GetSecretResponse { data: data.clone() })),
            None => Err(Status::not_found(format!("secret {id} not found"))),
        }
    }
}

/// Asks the client for secret `id`. `Ok(None)` when the client does not have it (or
/// serves no secrets at all), as upstream treats `NotFound` and `Unimplemented`.
pub async fn get_secret(caller: &Caller, id: &str) -> Result<Option<Vec<u8>>, Error> {
    if !caller.supports(GET_SECRET_METHOD) {
        return Ok(None);
    }
    let mut client =
        SecretsClient::new(caller.channel()).max_decoding_message_size(MAX_MESSAGE_SIZE);
    let request = GetSecretRequest {
        id: id.to_string(),
        ..GetSecretRequest::default()
    };
    match client.get_secret(request).await {
        Ok(response) => Ok(Some(response.into_inner().data)),
        Err(status) if matches!(status.code(), Code::NotFound | Code::Unimplemented) => Ok(None),
        Err(status) => Err(Error::from(status)),
    }
}
