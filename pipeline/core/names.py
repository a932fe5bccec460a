"""The names of the models the pipeline builds and compares, as evaluate scores them and kfold pools them."""
from __future__ import annotations

ONNX_NAME = "student_onnx"  # the int8 ONNX student from the export stage
BLEND = "teacher_blend"  # the student's targets when distill blended the teacher with the baseline
STUDENTS = ("student", ONNX_NAME)  # judged against what they learned from
PACKAGED = {ONNX_NAME: "student-onnx"}  # models/<folder> of each model, where it differs from its name
# The paired comparisons evaluate and kfold report (a vs b), and those added when distill learned from a blend.
PAIRS = (("teacher", "baseline"), ("student", "teacher"), ("student", "baseline"), (ONNX_NAME, "student"),
         (ONNX_NAME, "teacher"))
BLEND_PAIRS = ((BLEND, "baseline"), (BLEND, "teacher"), ("student", BLEND), (ONNX_NAME, BLEND))
