"""Deployed latency: which runtimes a model gets, and the interleaved timing."""

from gs_core.deploy.latency import RUNTIMES, runners
from gs_core.eval.cost import median_ms
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import make_student


def test_runners_cover_every_runtime_a_model_can_be_deployed_to(tiny_generator, rgb_batch, tmp_path):
    teacher = tiny_generator("cartoongan")
    student = make_student(teacher, 8, gated=False)
    calibrate_activations(student, teacher.preprocess(rgb_batch(2, 16, 16)))
    timed = median_ms(runners({"teacher": teacher, "student": student.eval()}, 16, 1, tmp_path), warmup=1,
                      repeats=2)
    expected = {("teacher", "pytorch"), ("teacher", "onnxruntime"), ("student", "pytorch"),
                ("student", "onnxruntime"), ("student", "onnxruntime-int8")}
    if "openvino" in RUNTIMES:  # installed: the same two files on OpenVINO too
        expected |= {("teacher", "openvino"), ("student", "openvino"), ("student", "openvino-int8")}
    assert set(timed) == expected
    assert all(ms > 0 for ms in timed.values())
