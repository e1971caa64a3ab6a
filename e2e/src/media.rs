//! Inputs for the node, drawn with ffmpeg.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Draws an H.264 video at `path`: `seconds` long, `width` x `height` at 25 fps, black text
/// on white (a title and the frame number), so the text detector has something to find on
/// every frame.
pub fn text_video(path: &Path, width: u32, height: u32, seconds: u32) -> anyhow::Result<()> {
    let filters = format!(
        "drawtext=fontfile={FONT}:text='Stagecast benchmark':fontsize=40:fontcolor=black:x=40:y=80,\
         drawtext=fontfile={FONT}:text='frame %{{n}}':fontsize=32:fontcolor=black:x=40:y=220"
    );
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i"])
        .arg(format!("color=c=white:s={width}x{height}:d={seconds}:r=25"))
        .args(["-vf", &filters, "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .context("running ffmpeg (apt-get install ffmpeg)")?;
    ensure!(status.success(), "ffmpeg could not draw {}", path.display());
    Ok(())
}
