//! SCRAM-SHA-256 verifiers computed on the client (RFC 5802 / RFC 7677), in the form PostgreSQL
//! stores in pg_authid.rolpassword. `ALTER ROLE ... PASSWORD '<verifier>'` then sets the
//! password without the password itself ever reaching the server, so no statement log,
//! pg_stat_statements entry or audit record can contain it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// PostgreSQL's default (scram_iterations in PostgreSQL 16+, fixed in 15).
pub const ITERATIONS: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ScramError {
    /// PostgreSQL normalises passwords with SASLprep; for printable ASCII that is the
    /// identity, so only such passwords are accepted rather than implementing SASLprep.
    #[error("the new password contains characters other than printable ASCII")]
    NotPrintableAscii,
}

/// The salted password's two keys.
pub struct Keys {
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn keys(password: &str, salt: &[u8], iterations: u32) -> Result<Keys, ScramError> {
    if !password.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ScramError::NotPrintableAscii);
    }
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
    let client_key = hmac(&salted, b"Client Key");
    Ok(Keys {
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, b"Server Key"),
    })
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, all base64.
pub fn verifier(password: &str, salt: &[u8], iterations: u32) -> Result<String, ScramError> {
    let k = keys(password, salt, iterations)?;
    Ok(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        B64.encode(salt),
        B64.encode(k.stored_key),
        B64.encode(k.server_key)
    ))
}

/// A verifier with a fresh 16-byte salt from the OS RNG (PostgreSQL's salt length).
pub fn new_verifier(password: &str) -> Result<String, ScramError> {
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    verifier(password, &salt, ITERATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3: user "user", password "pencil". The keys are checked through the
    /// exchange's published ClientProof and ServerSignature.
    #[test]
    fn rfc7677_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let k = keys("pencil", &salt, 4096).unwrap();
        let auth = b"n=user,r=rOprNGfwEbeRWgbNEkqO,\
r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let server_signature = hmac(&k.server_key, auth);
        assert_eq!(
            B64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // ClientProof = ClientKey xor HMAC(StoredKey, AuthMessage), and StoredKey = H(ClientKey).
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = hmac(&k.stored_key, auth);
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(<[u8; 32]>::from(Sha256::digest(&client_key)), k.stored_key);
    }

    #[test]
    fn verifier_format() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = verifier("pencil", &salt, 4096).unwrap();
        assert_eq!(
            v,
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
        let a = new_verifier("pencil").unwrap();
        let b = new_verifier("pencil").unwrap();
        assert_ne!(a, b, "salts must differ");
        assert!(!a.contains("pencil"));
        assert!(matches!(
            verifier("pässword", &salt, 4096),
            Err(ScramError::NotPrintableAscii)
        ));
    }
}
