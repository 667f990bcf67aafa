//! The image's bytes as an HTTP body: allocated data read from librbd in a blocking thread,
//! zero runs synthesised, with a bounded queue between reader and uploader so memory stays
//! bounded whatever the disk size and reads run ahead of the upload.

use bytes::Bytes;
use snapq_common::rbd::Pool;
use tokio::sync::mpsc;
use tracing::warn;

use super::extents::Extents;

/// Bytes per chunk (a RADOS object).
pub const CHUNK: usize = 4 * 1024 * 1024;
/// Chunks buffered between the reader and the upload: memory is about CHUNK × this.
pub const READ_AHEAD: usize = 4;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The pieces of the image in order: `(offset, len, allocated)`, each at most CHUNK long.
pub fn pieces(extents: &Extents) -> impl Iterator<Item = (u64, usize, bool)> + '_ {
    let mut regions = extents.regions.iter().copied().peekable();
    let mut pos = 0u64;
    std::iter::from_fn(move || {
        if pos >= extents.size {
            return None;
        }
        while let Some(&(offset, len)) = regions.peek() {
            if offset + len <= pos {
                regions.next();
            } else {
                break;
            }
        }
        let (len, allocated) = match regions.peek() {
            Some(&(offset, len)) if offset <= pos => ((offset + len - pos), true),
            Some(&(offset, _)) => (offset - pos, false),
            None => (extents.size - pos, false),
        };
        let len = len.min(CHUNK as u64).min(extents.size - pos) as usize;
        let piece = (pos, len, allocated);
        pos += len as u64;
        Some(piece)
    })
}

/// A streaming body of the image `pool/disk@snapshot`.
pub fn body(pool: Pool, disk: String, snapshot: String, extents: Extents) -> reqwest::Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let image = match pool.open_read_only(&disk, Some(&snapshot)) {
            Ok(image) => image,
            Err(e) => {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                return;
            }
        };
        for (offset, len, allocated) in pieces(&extents) {
            let chunk = if allocated {
                let mut buf = vec![0u8; len];
                match image.read_at(offset, &mut buf) {
                    Ok(n) if n == len => Ok(Bytes::from(buf)),
                    Ok(n) => Err(std::io::Error::other(format!(
                        "short read at {offset}: {n} of {len}"
                    ))),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            } else {
                Ok(Bytes::from_static(&ZEROS[..len]))
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() {
                warn!("the upload stopped reading; abandoning the copy");
                return;
            }
            if failed {
                return;
            }
        }
    });
    reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn pieces_cover_the_image_in_order_with_zero_runs_between_data() {
        let extents = Extents {
            size: 20 * MIB,
            regions: vec![(4 * MIB, 6 * MIB), (16 * MIB, 4 * MIB)],
        };
        let pieces: Vec<_> = pieces(&extents).collect();
        let mut pos = 0;
        for &(offset, len, _) in &pieces {
            assert_eq!(offset, pos, "contiguous");
            assert!(len > 0 && len <= CHUNK);
            pos += len as u64;
        }
        assert_eq!(pos, 20 * MIB, "covers the whole image");
        let data: u64 = pieces.iter().filter(|p| p.2).map(|p| p.1 as u64).sum();
        assert_eq!(data, 10 * MIB, "reads exactly the allocated bytes");
        assert_eq!(pieces[0], (0, 4 * MIB as usize, false));
        assert_eq!(pieces[1], (4 * MIB, 4 * MIB as usize, true));
        assert_eq!(pieces[2], (8 * MIB, 2 * MIB as usize, true));
        assert_eq!(pieces[3], (10 * MIB, 4 * MIB as usize, false));
    }

    #[test]
    fn an_empty_disk_is_all_zeros_and_a_full_one_all_data() {
        let empty = Extents {
            size: 9 * MIB,
            regions: vec![],
        };
        assert!(pieces(&empty).all(|p| !p.2));
        assert_eq!(pieces(&empty).map(|p| p.1 as u64).sum::<u64>(), 9 * MIB);
        let full = Extents {
            size: 9 * MIB,
            regions: vec![(0, 9 * MIB)],
        };
        assert!(pieces(&full).all(|p| p.2));
        assert_eq!(pieces(&full).count(), 3);
    }
}
