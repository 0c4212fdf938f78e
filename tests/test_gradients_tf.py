"""FullGrad on TF frozen graphs (extra [tf]): GraphDef -> torch executor, parity vs TF."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf


def _frozen_graph(seed=0, size=32):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    rng = np.random.default_rng(seed)
    v = lambda *s, sc=0.2: tf.Variable(rng.normal(0, sc, s).astype(np.float32))  # noqa: E731
    w1, b1 = v(3, 3, 3, 8), v(8, sc=0.1)
    sc, off, mu, var = (tf.Variable((rng.random(8) + 0.5).astype(np.float32)), v(8, sc=0.1), v(8, sc=0.1),
                        tf.Variable((rng.random(8) + 0.5).astype(np.float32)))
    w2, b2 = v(3, 3, 8, 8), v(8, sc=0.1)
    wd = v(3, 3, 8, 1)
    wf, bf = v(8, 4), v(4, sc=0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="Placeholder")])
    def f(x):
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w1, 1, "SAME"), b1))
        y, _, _ = tf.compat.v1.nn.fused_batch_norm(y, sc, off, mu, var, is_training=False, epsilon=1e-3)
        y = tf.nn.relu(y)
        y = tf.nn.max_pool2d(y, 3, 2, "SAME")
        y = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(y, w2, 2, "VALID"), b2))
        y = tf.nn.relu(tf.nn.depthwise_conv2d(y, wd, [1, 1, 1, 1], "SAME"))
        y = tf.reduce_mean(y, axis=[1, 2])
        return tf.nn.softmax(tf.matmul(y, wf) + bf, name="loss")

    cf = convert_variables_to_constants_v2(f.get_concrete_function())
    return cf.graph.as_graph_def().SerializeToString()


def test_tf_frozen_graph_fullgrad(tmp_path):
    from xaudit.explainers import get_explainer
    from xaudit.model import Model, Preprocessing
    from xaudit.white_box.tf import for_tf_graph
    import tensorflow as tf
    pb = tmp_path / "model.pb"
    pb.write_bytes(_frozen_graph())
    pp = Preprocessing(layout="NHWC")
    diff = for_tf_graph(pb, pp, (32, 32))
    kinds = [b.kind for b in diff.bias_layers]
    assert kinds.count("biasadd") == 2 and "batchnorm" in kinds, kinds
    assert diff.parity <= 1e-4

    class TFModel(Model):  # minimal adapter over a real TF session
        format = "tf"

        def __init__(self):
            g = tf.Graph()
            with g.as_default():
                gd = tf.compat.v1.GraphDef()
                gd.ParseFromString(pb.read_bytes())
                tf.compat.v1.import_graph_def(gd, name="")
            self.sess = tf.compat.v1.Session(graph=g)
            self._setup(source=str(pb), labels=list("abcd"), input_size=(32, 32), preprocessing=pp,
                        output_kind="probabilities")

        def _forward_native(self, native):
            return self.sess.run("Identity:0" if False else diff.prob_output + ":0", {"Placeholder:0": native})

        def _check_gradients(self):
            return True, diff.notes

        def _differentiable(self):
            return diff

    m = TFModel()
    img = np.random.default_rng(3).random((32, 32, 3), dtype=np.float32)
    e = get_explainer("fullgrad").explain(m, img)
    assert e.meta["completeness_error"] <= 1e-4, e.meta
    assert e.meta["gradient_source"] == "tf"
    assert e.attribution.shape == (32, 32) and np.isfinite(e.attribution).all()
    g = get_explainer("gradcam").explain(m, img)
    assert g.attribution.shape == (32, 32)
    i = get_explainer("ig", steps=16).explain(m, img)
    assert np.isfinite(i.attribution).all()


def test_tf_unsupported_op_reported(tmp_path):
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from xaudit.model import Preprocessing
    from xaudit.white_box.tf import check_tf_graph

    @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32, name="Placeholder")])
    def f(x):
        return tf.nn.softmax(tf.reduce_mean(tf.math.cumsum(x, axis=1), axis=[1, 2]))
    gd = convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
    ok, why = check_tf_graph(gd.SerializeToString(), Preprocessing(layout="NHWC"), (8, 8))
    assert not ok and "Cumsum" in why


def test_tf_frozen_graph_through_loader(tmp_path):
    from xaudit.explainers import get_explainer
    from xaudit.loader import load_model
    pb = tmp_path / "model.pb"
    pb.write_bytes(_frozen_graph(seed=1))
    (tmp_path / "labels.txt").write_text("a\nb\nc\nd\n")
    m = load_model(str(pb), input_size="32", labels=str(tmp_path / "labels.txt"))
    assert m.gradients_reachable, m.gradients_reason
    img = np.random.default_rng(5).random((32, 32, 3), dtype=np.float32)
    e = get_explainer("fullgrad").explain(m, img)
    assert e.meta["completeness_error"] <= 1e-4 and e.meta["gradient_source"] == "tf"
    assert abs(e.target_prob - float(m.predict(img[None])[0].max())) <= 1e-4
    # a Custom Vision bundle holding a model.pb
    b = tmp_path / "cvtf"
    b.mkdir()
    (b / "model.pb").write_bytes(pb.read_bytes())
    (b / "labels.txt").write_text("a\nb\nc\nd\n")
    cv = load_model(str(b), input_size="32")
    assert cv.gradients_reachable, cv.gradients_reason
    e2 = get_explainer("fullgrad").explain(cv, img)
    assert e2.meta["completeness_error"] <= 1e-4


@pytest.mark.parametrize("name", ["signs.pb", "signs_cv_tf"])
def test_shipped_tf_sign_model(name):
    from pathlib import Path

    from xaudit import data
    from xaudit.explainers import get_explainer
    from xaudit.loader import load_model
    try:
        p = data.model_path(name)
    except Exception:  # noqa: BLE001
        pytest.skip(f"{name} not shipped")
    if not Path(p).exists():
        pytest.skip(f"{name} not shipped")
    m = load_model(str(p))
    assert m.gradients_reachable, m.gradients_reason
    images, _, _ = data.make_signs(3, seed=5)
    for im in images:
        e = get_explainer("fullgrad").explain(m, im)
        assert e.meta["completeness_error"] <= 1e-4 and e.meta["gradient_source"] == "tf"
