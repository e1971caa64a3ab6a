//! Stage 2: turn the input file into RGB frames. Still images go through the `image`
//! crate; anything else through an ffmpeg subprocess, sampled at the requested rate and
//! streamed frame by frame so long videos never sit in memory. ffmpeg also scales video
//! frames to the model's input size: faster than resizing here, and in its own process.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::Error;

/// One decoded frame; `index` counts sampled frames from 0.
pub struct Frame {
    pub index: u64,
    pub image: RgbImage,
}

/// The frames of an input, arriving as they are decoded. Dropping it stops the decoder.
pub struct Frames {
    /// The input's own frame size (frames may arrive scaled to the model's input size).
    pub width: u32,
    pub height: u32,
    /// How many frames to expect, when the container says how long it is.
    pub expected: Option<u64>,
    rx: mpsc::Receiver<Result<Frame, Error>>,
    task: Option<JoinHandle<()>>,
}

impl Frames {
    pub async fn next(&mut self) -> Option<Result<Frame, Error>> {
        self.rx.recv().await
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        // the task owns ffmpeg, started with kill_on_drop
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Opens `path`, an image or a video sampled at `fps`; `buffer` frames are decoded ahead.
/// `scaled_size` gives the size video frames should arrive at for a given frame size.
pub async fn open(
    path: &Path,
    fps: f64,
    buffer: usize,
    scaled_size: impl Fn(u32, u32) -> (u32, u32),
) -> Result<Frames, Error> {
    let (tx, rx) = mpsc::channel(buffer.max(1));
    if let Some(image) = still_image(path.to_owned()).await? {
        let (width, height) = image.dimensions();
        tx.send(Ok(Frame { index: 0, image }))
            .await
            .map_err(|_| Error::Internal("frame channel closed".into()))?;
        return Ok(Frames {
            width,
            height,
            expected: Some(1),
            rx,
            task: None,
        });
    }
    let probe = probe(path).await?;
    let fps = probe.frame_rate.map_or(fps, |source| fps.min(source));
    let expected = probe.duration.map(|d| ((d * fps).round() as u64).max(1));
    let (scaled_w, scaled_h) = scaled_size(probe.width, probe.height);
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vf"])
        .arg(format!("fps={fps},scale={scaled_w}:{scaled_h}:flags=area"))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a SIGTERM to the node's group (a terminal, a supervisor)
        // drains the node, and must not kill the decoder of a run that may still finish.
        // kill_on_drop still ends it with its run.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::DecoderUnavailable(format!("ffmpeg: {e}")))?;
    let task = tokio::spawn(async move {
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(read_all(stderr));
        let mut sent = read_frames(stdout, scaled_w, scaled_h, &tx).await;
        if sent.is_ok() {
            let status = child.wait().await;
            let errors = stderr.await.unwrap_or_default();
            sent = match status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(Error::DecodeFailed(format!(
                    "ffmpeg {s}: {}",
                    last_line(&errors)
                ))),
                Err(e) => Err(Error::DecoderUnavailable(format!("ffmpeg: {e}"))),
            };
        }
        if let Err(e) = sent {
            let _ = tx.send(Err(e)).await;
        }
    });
    Ok(Frames {
        width: probe.width,
        height: probe.height,
        expected,
        rx,
        task: Some(task),
    })
}

/// Decodes `path` if it is an image format the `image` crate reads; `None` otherwise.
async fn still_image(path: PathBuf) -> Result<Option<RgbImage>, Error> {
    tokio::task::spawn_blocking(move || {
        let failed =
            |e: &dyn std::fmt::Display| Error::DecodeFailed(format!("{}: {e}", path.display()));
        let reader = ImageReader::open(&path)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| failed(&e))?;
        if !reader.format().is_some_and(|f| f.reading_enabled()) {
            return Ok(None);
        }
        let mut decoder = reader.into_decoder().map_err(|e| failed(&e))?;
        let orientation = decoder.orientation().map_err(|e| failed(&e))?;
        let mut image = DynamicImage::from_decoder(decoder).map_err(|e| failed(&e))?;
        // camera pictures store rotation in EXIF; boxes are reported on the upright image
        image.apply_orientation(orientation);
        Ok(Some(image.into_rgb8()))
    })
    .await?
}

struct Probe {
    width: u32,
    height: u32,
    duration: Option<f64>,
    frame_rate: Option<f64>,
}

async fn probe(path: &Path) -> Result<Probe, Error> {
    #[derive(Deserialize)]
    struct Output {
        #[serde(default)]
        streams: Vec<Stream>,
        format: Option<Format>,
    }
    #[derive(Deserialize)]
    struct Stream {
        width: u32,
        height: u32,
        avg_frame_rate: Option<String>,
        duration: Option<String>,
        #[serde(default)]
        side_data_list: Vec<SideData>,
    }
    #[derive(Deserialize)]
    struct Format {
        duration: Option<String>,
    }
    #[derive(Deserialize)]
    struct SideData {
        rotation: Option<i64>,
    }

    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .arg(
            "stream=width,height,avg_frame_rate,duration:stream_side_data=rotation:format=duration",
        )
        .args(["-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .await
        .map_err(|e| Error::DecoderUnavailable(format!("ffprobe: {e}")))?;
    let name = path.display();
    if !output.status.success() {
        let errors = String::from_utf8_lossy(&output.stderr);
        return Err(Error::DecodeFailed(format!(
            "{name}: {}",
            last_line(&errors)
        )));
    }
    let parsed: Output = serde_json::from_slice(&output.stdout)
        .map_err(|e| Error::DecodeFailed(format!("{name}: unreadable ffprobe output: {e}")))?;
    let stream = parsed
        .streams
        .into_iter()
        .next()
        .ok_or_else(|| Error::DecodeFailed(format!("{name}: no video stream")))?;
    if stream.width == 0 || stream.height == 0 {
        return Err(Error::DecodeFailed(format!(
            "{name}: the video has no size"
        )));
    }
    // ffmpeg turns frames upright, so a quarter turn swaps the sides
    let quarter_turn = stream
        .side_data_list
        .iter()
        .filter_map(|s| s.rotation)
        .any(|r| r.rem_euclid(180) == 90);
    let (width, height) = if quarter_turn {
        (stream.height, stream.width)
    } else {
        (stream.width, stream.height)
    };
    let seconds = |s: Option<String>| {
        s.and_then(|s| s.parse::<f64>().ok())
            .filter(|d| d.is_finite() && *d > 0.0)
    };
    Ok(Probe {
        width,
        height,
        duration: seconds(stream.duration)
            .or_else(|| seconds(parsed.format.and_then(|f| f.duration))),
        frame_rate: stream.avg_frame_rate.as_deref().and_then(ratio),
    })
}

/// ffprobe's rates are fractions such as `30000/1001`; `0/0` means unknown.
fn ratio(s: &str) -> Option<f64> {
    let (n, d) = s.split_once('/')?;
    let r = n.parse::<f64>().ok()? / d.parse::<f64>().ok()?;
    (r.is_finite() && r > 0.0).then_some(r)
}

async fn read_frames(
    mut stdout: impl AsyncRead + Unpin,
    width: u32,
    height: u32,
    tx: &mpsc::Sender<Result<Frame, Error>>,
) -> Result<(), Error> {
    let size = width as usize * height as usize * 3;
    for index in 0.. {
        let mut buf = vec![0; size];
        let mut filled = 0;
        while filled < size {
            match stdout.read(&mut buf[filled..]).await {
                Ok(0) if filled == 0 => return Ok(()),
                Ok(0) => return Err(Error::DecodeFailed("ffmpeg stopped inside a frame".into())),
                Ok(n) => filled += n,
                Err(e) => return Err(Error::DecodeFailed(format!("reading ffmpeg's output: {e}"))),
            }
        }
        let image = RgbImage::from_raw(width, height, buf).expect("buffer holds one frame");
        if tx.send(Ok(Frame { index, image })).await.is_err() {
            // the pipeline stopped listening (cancelled or failed)
            return Ok(());
        }
    }
    Ok(())
}

async fn read_all(mut r: impl AsyncRead + Unpin) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s).await;
    s
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
}

#[cfg(test)]
mod tests {
    use super::ratio;

    #[test]
    fn frame_rates_are_fractions() {
        assert_eq!(ratio("25/1"), Some(25.0));
        assert!((ratio("30000/1001").unwrap() - 29.97).abs() < 0.01);
        assert_eq!(ratio("0/0"), None);
        assert_eq!(ratio("x"), None);
    }
}
