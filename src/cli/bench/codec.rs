//! What turning a stored body into an answer costs, one step at a time, in this process: the
//! JSON decode of the body, the conversion to the API's message (its name and etag included),
//! and the protobuf encoding. Beside them, what a store of protobuf bodies would pay instead:
//! decoding the stored message, or only copying its bytes into the answer and adding the
//! name and etag. One thread, no I/O: the codec's share of a call, not a call.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::ensure;
use prost::Message;
use serde::Serialize;

use crate::domain::RecordKind;
use crate::records::{self, Project, ResourceName};
use crate::wire::pb;
use crate::wire::projects::project_to;

/// Nanoseconds per record of each step: the fastest of the rounds.
#[derive(Debug, Serialize)]
pub struct CodecFigures {
    pub records: usize,
    pub rounds: usize,
    pub json_bytes: usize,
    pub protobuf_bytes: usize,
    pub json_decode_ns: f64,
    pub convert_ns: f64,
    pub protobuf_encode_ns: f64,
    pub protobuf_decode_ns: f64,
    pub copy_with_name_and_etag_ns: f64,
}

/// The stored versions the steps work on.
struct Stored {
    projects: Vec<Project>,
    /// As the store keeps them today.
    json: Vec<String>,
    /// As a protobuf store would: the API message without what the row gives (name, etag).
    protobuf: Vec<Vec<u8>>,
}

/// Times each step over `records` stored versions of the bench's project, `rounds` times
/// after one round of warm-up.
pub fn run(records: usize, rounds: usize) -> anyhow::Result<CodecFigures> {
    let stored = stored(records.max(1))?;
    let mut best = [Duration::MAX; 5];
    for round in 0..=rounds.max(1) {
        let times = round_of(&stored)?;
        if round > 0 {
            for (b, t) in best.iter_mut().zip(times) {
                *b = (*b).min(t);
            }
        }
    }
    let n = stored.projects.len();
    let per = |d: Duration| d.as_nanos() as f64 / n as f64;
    Ok(CodecFigures {
        records: n,
        rounds: rounds.max(1),
        json_bytes: stored.json.iter().map(String::len).sum::<usize>() / n,
        protobuf_bytes: stored.protobuf.iter().map(Vec::len).sum::<usize>() / n,
        json_decode_ns: per(best[0]),
        convert_ns: per(best[1]),
        protobuf_encode_ns: per(best[2]),
        protobuf_decode_ns: per(best[3]),
        copy_with_name_and_etag_ns: per(best[4]),
    })
}

fn stored(records: usize) -> anyhow::Result<Stored> {
    // 2026-12-01T00:00:00Z in microseconds, as records keep times.
    let now = 1_764_547_200_000_000;
    let projects: Vec<Project> = (0..records)
        .map(|i| {
            let mut p = super::sample(i);
            p.id = uuid::Uuid::now_v7();
            p.owner = "zone".into();
            p.revision = 1;
            p.create_time = now;
            p.update_time = now;
            p
        })
        .collect();
    let json = projects
        .iter()
        .map(serde_json::to_string)
        .collect::<Result<_, _>>()?;
    let protobuf = projects
        .iter()
        .map(|p| {
            pb::Project {
                name: String::new(),
                etag: String::new(),
                ..project_to(p.clone())
            }
            .encode_to_vec()
        })
        .collect();
    Ok(Stored {
        projects,
        json,
        protobuf,
    })
}

/// One round: the time of each step over all records, in the order of [`CodecFigures`].
fn round_of(stored: &Stored) -> anyhow::Result<[Duration; 5]> {
    let started = Instant::now();
    let decoded: Vec<Project> = stored
        .json
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<Result<_, _>>()?;
    let json_decode = started.elapsed();

    let started = Instant::now();
    let messages: Vec<pb::Project> = decoded.into_iter().map(project_to).collect();
    let convert = started.elapsed();

    let started = Instant::now();
    let mut today = Vec::new();
    for m in &messages {
        m.encode_length_delimited(&mut today)?;
    }
    let protobuf_encode = started.elapsed();

    let started = Instant::now();
    for bytes in &stored.protobuf {
        black_box(pb::Project::decode(bytes.as_slice())?);
    }
    let protobuf_decode = started.elapsed();

    let started = Instant::now();
    let mut served = Vec::new();
    for (bytes, p) in stored.protobuf.iter().zip(&stored.projects) {
        let name = ResourceName::new(&p.owner, RecordKind::Project, p.id);
        let derived = pb::Project {
            name: name.to_string(),
            etag: records::etag(&name, p.revision),
            ..Default::default()
        };
        // Protobuf merges a message's fields across concatenated encodings.
        prost::encoding::encode_varint((bytes.len() + derived.encoded_len()) as u64, &mut served);
        served.extend_from_slice(bytes);
        derived.encode(&mut served)?;
    }
    let copy = started.elapsed();

    ensure!(
        same_answers(&today, &served)?,
        "the served bytes do not decode to the answer of today's path"
    );
    Ok([json_decode, convert, protobuf_encode, protobuf_decode, copy])
}

/// Whether two runs of length-delimited projects decode to the same messages.
fn same_answers(a: &[u8], b: &[u8]) -> anyhow::Result<bool> {
    fn all(mut bytes: &[u8]) -> anyhow::Result<Vec<pb::Project>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            out.push(pb::Project::decode_length_delimited(&mut bytes)?);
        }
        Ok(out)
    }
    Ok(all(a)? == all(b)?)
}

/// The figures as a table, with what a page of 50 spends on each path.
pub fn table(f: &CodecFigures) -> String {
    let today = f.json_decode_ns + f.convert_ns + f.protobuf_encode_ns;
    let decoded = f.protobuf_decode_ns + f.convert_ns + f.protobuf_encode_ns;
    let mut out = format!(
        "codec: {} records of the bench's project, fastest of {} rounds; body {} bytes as \
         JSON, {} as protobuf\n| step | ns per record | µs per page of 50 |\n|---|---:|---:|\n",
        f.records, f.rounds, f.json_bytes, f.protobuf_bytes
    );
    for (step, ns) in [
        ("JSON decode of the stored body", f.json_decode_ns),
        ("conversion to the API message (name, etag)", f.convert_ns),
        ("protobuf encoding of the answer", f.protobuf_encode_ns),
        ("today: the three above", today),
        ("protobuf decode of a stored message", f.protobuf_decode_ns),
        (
            "protobuf store, decoded: decode, conversion, encoding",
            decoded,
        ),
        (
            "protobuf store, served: copy the bytes, add name and etag",
            f.copy_with_name_and_etag_ns,
        ),
    ] {
        out.push_str(&format!(
            "| {step} | {ns:.0} | {:.1} |\n",
            ns * 50.0 / 1000.0
        ));
    }
    out
}

#[cfg(test)]
mod tests;
