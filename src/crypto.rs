//! The gateway's cryptography, by profile. Today every operation outside this module is
//! international (TLS 1.3 with the usual suites, P-256, SHA-256); [`gm`] holds the 商用密码
//! primitives (SM2 signatures, SM3 hashes, SM4-GCM) the `gm` profile is built on, each held
//! to the standards' own test vectors and checked against an implementation nobody here
//! wrote (OpenSSL).

pub mod gm;
