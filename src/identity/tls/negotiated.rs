//! What a TLS handshake chose, named for people: the status of a call (`WhoAmI`) and the
//! logs say which suite and group protected it.

/// What a TLS handshake chose, by the names the IANA registry gives (RFC 8998's for the gm
/// profile).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Negotiated {
    /// E.g. `TLS_SM4_GCM_SM3` or `TLS13_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
    /// E.g. `curveSM2` or `X25519`.
    pub group: String,
}

impl Negotiated {
    /// What `connection` negotiated (empty before the handshake is done).
    pub fn of(connection: &rustls::CommonState) -> Negotiated {
        use crate::crypto::gm::tls::{CURVE_SM2, TLS_SM4_GCM_SM3};
        let cipher_suite = match connection.negotiated_cipher_suite().map(|s| s.suite()) {
            None => String::new(),
            Some(TLS_SM4_GCM_SM3) => "TLS_SM4_GCM_SM3".into(),
            Some(suite) => suite
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{:#06x}", u16::from(suite))),
        };
        let group = match connection.negotiated_key_exchange_group().map(|g| g.name()) {
            None => String::new(),
            Some(CURVE_SM2) => "curveSM2".into(),
            Some(group) => group
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{:#06x}", u16::from(group))),
        };
        Negotiated {
            cipher_suite,
            group,
        }
    }
}
