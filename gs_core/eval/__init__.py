"""Measuring generators: quality against the teacher (PSNR, SSIM, LPIPS, FID) and cost (params, MACs,
size in bits, latency). Heavy backbones load only when a metric object is built, never at import."""
from gs_core.eval.backbones import BACKBONES, MissingWeightsError, fetch_weights, require_weights
from gs_core.eval.cost import compression, count_macs, count_params, measure_latency, size_bits
from gs_core.eval.evaluate import METRICS, evaluate_models, write_table
from gs_core.eval.quality import (FIDMetric, LPIPSMetric, fid_against_folder, fid_from_features,
                                  frechet_distance, load_image_folder, psnr, ssim)

__all__ = [
    "BACKBONES", "MissingWeightsError", "fetch_weights", "require_weights",
    "compression", "count_macs", "count_params", "measure_latency", "size_bits",
    "METRICS", "evaluate_models", "write_table",
    "FIDMetric", "LPIPSMetric", "fid_against_folder", "fid_from_features", "frechet_distance",
    "load_image_folder", "psnr", "ssim",
]
