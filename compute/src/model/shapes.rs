//! A manifest must fit the model files it names: the input as declared (in its layout),
//! and outputs of the shape its kind reads.

use super::manifest::OutputSpec;
use super::{Link, TensorInfo};

pub(super) fn check(link: &Link) -> Result<(), String> {
    let manifest = &link.manifest;
    let input = &manifest.input;
    let declared = input.layout.order(input.shape);
    let first = &link.nets[0];
    // a dimension the manifest fixes may be dynamic in the model, not the other way
    let strict = first.input().shape.len() == 4
        && first
            .input()
            .shape
            .iter()
            .zip(declared)
            .all(|(&have, want)| have == want || have == -1);
    if !strict {
        return Err(format!(
            "input {} is {:?} in the model but {declared:?} in the manifest ({:?} layout)",
            first.input().name,
            first.input().shape,
            input.layout
        ));
    }
    let output = |net: usize, i: usize| -> Result<&TensorInfo, String> {
        link.nets[net]
            .outputs()
            .get(i)
            .ok_or_else(|| format!("network {net} has no output {i}"))
    };
    match &manifest.output {
        OutputSpec::DetectorProbabilityMap(_) => fits(
            output(0, 0)?,
            &[-1, 1, -1, -1],
            "a probability map [B, 1, H, W]",
        ),
        OutputSpec::Classifier(c) => fits(
            output(0, 0)?,
            &[-1, c.labels.len() as i64],
            "a classifier's [B, labels]",
        ),
        OutputSpec::Ctc(_) => {
            let classes = link.characters.len() as i64;
            fits(
                output(0, 0)?,
                &[-1, -1, classes],
                "CTC's [B, T, blank + characters + space]",
            )
        }
        OutputSpec::Mtcnn(_) => {
            // P-Net: box offsets then face probabilities per cell; R-Net and O-Net per
            // window, O-Net with five landmarks between
            fits(output(0, 0)?, &[-1, -1, -1, 4], "P-Net's box offsets")?;
            fits(output(0, 1)?, &[-1, -1, -1, 2], "P-Net's probabilities")?;
            fits(link.nets[1].input(), &[-1, 24, 24, 3], "R-Net's input")?;
            fits(output(1, 0)?, &[-1, 4], "R-Net's box offsets")?;
            fits(output(1, 1)?, &[-1, 2], "R-Net's probabilities")?;
            fits(link.nets[2].input(), &[-1, 48, 48, 3], "O-Net's input")?;
            fits(output(2, 0)?, &[-1, 4], "O-Net's box offsets")?;
            fits(output(2, 1)?, &[-1, 10], "O-Net's landmarks")?;
            fits(output(2, 2)?, &[-1, 2], "O-Net's probabilities")
        }
    }
}

/// `tensor` fits `wanted` where both are fixed; -1 on either side matches anything.
fn fits(tensor: &TensorInfo, wanted: &[i64], what: &str) -> Result<(), String> {
    let ok = tensor.shape.len() == wanted.len()
        && tensor
            .shape
            .iter()
            .zip(wanted)
            .all(|(&have, &want)| have == want || have == -1 || want == -1);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} is {:?} in the model, but the manifest needs {wanted:?}",
            tensor.name, tensor.shape
        ))
    }
}
