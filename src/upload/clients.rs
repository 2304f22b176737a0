//! The HTTP clients of the upload stage: the S3 client (aws-sdk-s3 over rustls with
//! ring) with its credentials, and the plain HTTPS client for presigned URLs.
//!
//! Credentials for S3 (`upload.s3.credentials`):
//! - `chain`: the standard AWS chain (environment, shared config and credentials
//!   files, container and instance metadata);
//! - `iot`: the AWS IoT credentials provider. An HTTPS GET with the device
//!   certificate to `https://<iot_credentials_endpoint>/role-aliases/<role_alias>/credentials`
//!   with the header `x-amzn-iot-thingname: <camera id>` returns temporary
//!   credentials of the IAM role behind the role alias (docs/uploads.md).
//!
//! Both are made at their first use ([`Clients`]): a camera that never uploads never
//! builds them, which took the release build's idle RSS from 20.9 to 18.8 MiB
//! (README, *A smaller build*).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, ProvideCredentials, Region, RequestChecksumCalculation,
    ResponseChecksumValidation, SharedCredentialsProvider,
};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use super::config::CredentialsSource;
use crate::settings::Config;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup for the credentials provider: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The upload stage's clients, shared by its attempts and each made when the first
/// attempt that needs it starts.
#[derive(Clone)]
pub struct Clients(Arc<Lazy>);

struct Lazy {
    config: Arc<Config>,
    s3: tokio::sync::OnceCell<aws_sdk_s3::Client>,
    presigned: tokio::sync::OnceCell<reqwest::Client>,
}

impl Clients {
    /// Makes nothing yet: `config` is what the clients will be made from.
    pub fn new(config: Arc<Config>) -> Self {
        Self(Arc::new(Lazy {
            config,
            s3: tokio::sync::OnceCell::new(),
            presigned: tokio::sync::OnceCell::new(),
        }))
    }

    /// The S3 client, made now if no attempt made it before. An error is not kept:
    /// the next attempt tries again.
    pub async fn s3(&self) -> Result<&aws_sdk_s3::Client, ClientError> {
        self.0.s3.get_or_try_init(|| s3(&self.0.config)).await
    }

    /// The client for presigned URLs, made now if no attempt made it before.
    pub async fn presigned(&self) -> Result<&reqwest::Client, ClientError> {
        self.0
            .presigned
            .get_or_try_init(|| async { presigned() })
            .await
    }

    /// Whether each client has been made (S3, presigned).
    #[cfg(test)]
    pub fn made(&self) -> (bool, bool) {
        (self.0.s3.initialized(), self.0.presigned.initialized())
    }
}

/// The S3 client for uploads by bucket and key. The SDK's own retries are off: a
/// failed attempt is retried by the job, which resumes from its recorded parts.
pub async fn s3(config: &Config) -> Result<aws_sdk_s3::Client, ClientError> {
    let s3 = &config.upload.s3;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .region(Region::new(s3.region.clone()));
    if s3.credentials == CredentialsSource::Iot {
        loader = loader
            .credentials_provider(SharedCredentialsProvider::new(IotCredentials::new(config)?));
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(s3.force_path_style)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    if !s3.endpoint.is_empty() {
        builder = builder.endpoint_url(&s3.endpoint);
    }
    Ok(aws_sdk_s3::Client::from_conf(builder.build()))
}

/// The client for presigned URLs: public roots (webpki) and, for tests and private
/// stores, plain HTTP when the request checks allowed it.
pub fn presigned() -> Result<reqwest::Client, ClientError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(web_tls())
        .connect_timeout(Duration::from_secs(20))
        .build()?)
}

fn web_tls() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Temporary credentials from the AWS IoT credentials provider, fetched with the
/// device certificate.
#[derive(Debug, Clone)]
pub struct IotCredentials {
    http: reqwest::Client,
    url: String,
    thing: String,
}

impl IotCredentials {
    pub fn new(config: &Config) -> Result<Self, ClientError> {
        let mut tls = (*crate::tls::client_config(&config.identity)?).clone();
        tls.alpn_protocols.clear();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(20))
            .timeout(Duration::from_secs(30))
            .build()?;
        let s3 = &config.upload.s3;
        Ok(Self {
            http,
            url: format!(
                "https://{}/role-aliases/{}/credentials",
                s3.iot_credentials_endpoint, s3.role_alias
            ),
            thing: config.identity.camera_id.clone(),
        })
    }

    async fn fetch(&self) -> Result<Credentials, String> {
        let response = self
            .http
            .get(&self.url)
            .header("x-amzn-iot-thingname", &self.thing)
            .send()
            .await
            .map_err(|e| format!("credentials provider unreachable: {e}"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| format!("credentials provider: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "credentials provider answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        parse_iot_credentials(&body)
    }
}

/// `{"credentials":{"accessKeyId","secretAccessKey","sessionToken","expiration"}}`.
pub fn parse_iot_credentials(body: &str) -> Result<Credentials, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expiration: String,
    }
    #[derive(serde::Deserialize)]
    struct Outer {
        credentials: Inner,
    }
    let o: Outer = serde_json::from_str(body)
        .map_err(|e| format!("credentials provider sent an unexpected answer: {e}"))?;
    let c = o.credentials;
    let expiry: Option<SystemTime> = humantime::parse_rfc3339_weak(&c.expiration).ok();
    Ok(Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        Some(c.session_token),
        expiry,
        "aws-iot-credentials-provider",
    ))
}

impl ProvideCredentials for IotCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            self.fetch().await.map_err(|reason| {
                tracing::warn!(%reason, "no S3 credentials from the AWS IoT credentials provider");
                aws_credential_types::provider::error::CredentialsError::provider_error(reason)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_are_made_at_their_first_use_and_kept() {
        let config = Config::parse(
            "[identity]\ncamera_id = \"cam-1\"\nbroker_host = \"h\"\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\n",
        )
        .unwrap();
        let clients = Clients::new(Arc::new(config));
        assert_eq!(clients.made(), (false, false));
        let a = clients.presigned().await.unwrap() as *const reqwest::Client;
        assert_eq!(clients.made(), (false, true));
        let b = clients.presigned().await.unwrap() as *const reqwest::Client;
        assert_eq!(a, b, "the second use gets the same client");
        clients.s3().await.unwrap();
        assert_eq!(clients.made(), (true, true));
    }

    #[test]
    fn the_credentials_provider_answer_parses() {
        let c = parse_iot_credentials(
            r#"{"credentials":{"accessKeyId":"AKIA1","secretAccessKey":"s","sessionToken":"t","expiration":"2026-11-22T08:00:00Z"}}"#,
        )
        .unwrap();
        assert_eq!(c.access_key_id(), "AKIA1");
        assert_eq!(c.session_token(), Some("t"));
        assert!(c.expiry().is_some());
        assert!(parse_iot_credentials(r#"{"message":"Access Denied"}"#).is_err());
    }
}
