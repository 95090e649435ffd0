//! Credential checks. Every comparison of a secret runs in constant time, and no function here
//! logs or returns what the client sent.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ApiError;

/// Equality of two secrets in time independent of where they differ. Both sides are hashed
/// first, so the comparison runs over equal lengths and does not reveal the secret's length.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(expected);
    a.ct_eq(&b).into()
}

/// Checks `Authorization: Bearer <token>` against the configured token.
pub fn bearer(token: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(ApiError::Forbidden(
            "STEWARD_API_TOKEN is unset: this endpoint is disabled until the controller is started with a token",
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(given) if secret_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
        Some(_) => {
            tracing::warn!("API request rejected: wrong bearer token");
            Err(ApiError::Unauthorized("wrong bearer token"))
        }
        None => {
            tracing::warn!("API request rejected: no bearer token");
            Err(ApiError::Unauthorized(
                "expected an Authorization: Bearer <token> header",
            ))
        }
    }
}

/// Checks a hex HMAC-SHA256 of `body` keyed with `secret`. `verify_slice` compares in constant
/// time.
pub fn hmac_sha256_hex(secret: &str, body: &[u8], signature_hex: &str) -> bool {
    let Ok(signature) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_eq_is_exact() {
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(!secret_eq(b"s3cret", b"s3cres"));
        assert!(!secret_eq(b"s3cre", b"s3cret"));
        assert!(!secret_eq(b"", b"s3cret"));
    }

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(hmac_sha256_hex("Jefe", b"what do ya want for nothing?", sig));
        assert!(!hmac_sha256_hex("Jefe", b"what do ya want for nothing!", sig));
        assert!(!hmac_sha256_hex("jefe", b"what do ya want for nothing?", sig));
        assert!(!hmac_sha256_hex("Jefe", b"what do ya want for nothing?", "not hex"));
        assert!(!hmac_sha256_hex("Jefe", b"what do ya want for nothing?", &sig[..62]));
    }
}
