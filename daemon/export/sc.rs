//! `mip.dcm`: the MIP picture (mip.png) as a DICOM Secondary Capture Image
//! (RGB, 8 bits, uncompressed) in the source study, so it can go to the PACS
//! beside seg.dcm and rtstruct.dcm: the source's patient and study
//! attributes, a new series, PatientOrientation as mip.png is drawn (`L\F`
//! for the coronal PET picture, `L\P` for the axial CT one), and the
//! reference series' instances as its Source Image Sequence.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::OutputSeries;
use super::dicom_refs::{
    DicomExportError, SourceRefs, item, new_uid, now_utc, put_patient_study, seq, text, texts, us,
};
use super::mip::Picture;

/// Secondary Capture Image Storage.
pub const SC_SOP_CLASS_UID: &str = "1.2.840.10008.5.1.4.1.1.7";

/// Reads the 8-bit RGB PNG at `png` (as `mip::write` writes it) and writes it
/// to `path` as a Secondary Capture of the study `src`.
pub fn write_png(
    path: &Path,
    png: &Path,
    src: &SourceRefs,
    series: &OutputSeries,
    orientation: [&str; 2],
) -> Result<(), DicomExportError> {
    let err = |reason: String| DicomExportError::Source { path: png.to_path_buf(), reason };
    let file = std::fs::File::open(png).map_err(|e| err(e.to_string()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| err(e.to_string()))?;
    let size = reader.output_buffer_size().ok_or_else(|| err("the picture is too large".into()))?;
    let mut buf = vec![0; size];
    let info = reader.next_frame(&mut buf).map_err(|e| err(e.to_string()))?;
    buf.truncate(info.buffer_size());
    let (width, height) = (info.width as usize, info.height as usize);
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        png::ColorType::Indexed => return Err(err("an indexed-colour picture".into())),
    };
    write(path, &Picture { width, height, rgb }, src, series, orientation)
}

/// Writes `pic` to `path` as a Secondary Capture of the study `src`; its
/// columns run towards `orientation[0]`, its rows towards `orientation[1]`
/// (PatientOrientation: L, P, F...).
pub fn write(
    path: &Path,
    pic: &Picture,
    src: &SourceRefs,
    series: &OutputSeries,
    orientation: [&str; 2],
) -> Result<(), DicomExportError> {
    let (rows, columns) = match (u16::try_from(pic.height), u16::try_from(pic.width)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 && pic.rgb.len() == 3 * pic.width * pic.height => (r, c),
        _ => {
            return Err(DicomExportError::Mismatch(format!(
                "a {} × {} picture cannot be a Secondary Capture (1 to 65535 pixels a side)",
                pic.width, pic.height
            )));
        }
    };
    let (date, time) = now_utc();
    let mut obj = InMemDicomObject::new_empty();
    put_patient_study(&mut obj, src);
    let sources = src
        .instances()
        .into_iter()
        .map(|(class, uid)| {
            item(vec![
                text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, uid),
            ])
        })
        .collect();
    let mut pixels = pic.rgb.clone();
    if pixels.len() % 2 == 1 {
        pixels.push(0);
    }
    for e in [
        // SOP Common.
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
        text(tags::SOP_CLASS_UID, VR::UI, SC_SOP_CLASS_UID),
        text(tags::SOP_INSTANCE_UID, VR::UI, &new_uid()),
        text(tags::INSTANCE_CREATION_DATE, VR::DA, &date),
        text(tags::INSTANCE_CREATION_TIME, VR::TM, &time),
        text(tags::TIMEZONE_OFFSET_FROM_UTC, VR::SH, "+0000"),
        // General Series.
        text(tags::MODALITY, VR::CS, "OT"),
        text(tags::SERIES_INSTANCE_UID, VR::UI, &new_uid()),
        text(tags::SERIES_NUMBER, VR::IS, &series.number.to_string()),
        text(tags::SERIES_DATE, VR::DA, &date),
        text(tags::SERIES_TIME, VR::TM, &time),
        text(tags::SERIES_DESCRIPTION, VR::LO, &series.description),
        // Type 2C: dciodvfy asks for it where it cannot tell the body part is unpaired.
        text(tags::LATERALITY, VR::CS, ""),
        // General Equipment, SC Equipment.
        text(tags::MANUFACTURER, VR::LO, "edgeseg"),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, "edgeseg"),
        text(tags::SOFTWARE_VERSIONS, VR::LO, crate::version()),
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        // General Image.
        text(tags::INSTANCE_NUMBER, VR::IS, "1"),
        texts(tags::PATIENT_ORIENTATION, VR::CS, orientation.map(String::from).to_vec()),
        text(tags::CONTENT_DATE, VR::DA, &date),
        text(tags::CONTENT_TIME, VR::TM, &time),
        texts(tags::IMAGE_TYPE, VR::CS, vec!["DERIVED".into(), "SECONDARY".into()]),
        text(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            "edgeseg mip.png: maximum-intensity projection of the reference series, findings outlined",
        ),
        seq(tags::SOURCE_IMAGE_SEQUENCE, sources),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        // SC Image.
        text(tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &date),
        text(tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &time),
        // Image Pixel.
        us(tags::SAMPLES_PER_PIXEL, &[3]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, &[0]),
        us(tags::ROWS, &[rows]),
        us(tags::COLUMNS, &[columns]),
        us(tags::BITS_ALLOCATED, &[8]),
        us(tags::BITS_STORED, &[8]),
        us(tags::HIGH_BIT, &[7]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::U8(pixels.into())),
    ] {
        obj.put(e);
    }
    super::dicom_refs::write_part10(path, obj)
}
