//! Interceptors tally adds to single requests: a precomputed payload hash for SigV4, and a guard
//! against servers that answer GetObjectAttributes with the whole object.

use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

/// Makes SigV4 sign the body with a SHA-256 tally already computed instead of hashing it again.
#[derive(Debug)]
pub(super) struct PrecomputedPayloadHash(pub(super) String);

impl Intercept for PrecomputedPayloadHash {
    fn name(&self) -> &'static str {
        "PrecomputedPayloadHash"
    }

    fn modify_before_signing(
        &self,
        _ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

/// Keeps GetObjectAttributes cheap on servers that do not implement it: some (Garage) answer the
/// request as a plain GET and stream the whole object back. A reply that is not XML, or is larger
/// than any attributes page, has its body dropped unread, and the call fails as "not implemented".
#[derive(Debug)]
pub(super) struct AttributesGuard;

/// Larger than any GetObjectAttributes page (1,000 parts).
const MAX_ATTRIBUTES_REPLY: u64 = 16 * 1024 * 1024;

impl Intercept for AttributesGuard {
    fn name(&self) -> &'static str {
        "AttributesGuard"
    }

    fn modify_before_deserialization(
        &self,
        ctx: &mut aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let resp = ctx.response_mut();
        let headers = resp.headers();
        let xml = headers
            .get("content-type")
            .is_some_and(|t| t.contains("xml"));
        let len: Option<u64> = headers.get("content-length").and_then(|l| l.parse().ok());
        if resp.status().is_success() && (!xml || len.is_some_and(|l| l > MAX_ATTRIBUTES_REPLY)) {
            *resp.body_mut() = aws_sdk_s3::primitives::SdkBody::empty();
            return Err(
                "the server answered GetObjectAttributes with something else (not implemented)"
                    .into(),
            );
        }
        Ok(())
    }
}
