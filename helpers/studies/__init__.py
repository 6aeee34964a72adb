"""The studies: each module plugs its models, samplers and losses into the core's public registries.

- :mod:`helpers.studies.densenet_fashion_mnist`: DenseNet-BC features and a Siamese head on Fashion-MNIST.
- :mod:`helpers.studies.contrastive_4_vs_9`: a 2-D contrastive embedding of 4 against 9 and shifted digits.
- :mod:`helpers.studies.vicreg`: self-supervised VICReg on MNIST, probes and anomaly scores.

Importing a study module registers its entries; the core never imports a study.
"""

#: the Keras objects a saved study model (or its training model) can hold, registered name -> the
#: study module that defines it: ``helpers.layers`` puts a stand-in under each name, which imports
#: the module when ``keras.models.load_model`` meets the name (this file imports nothing)
KERAS_OBJECTS = {
    "helpers>ViewAugment": "helpers.studies.vicreg",
    "helpers>VICRegLoss": "helpers.studies.vicreg",
    "helpers>VICRegTerm": "helpers.studies.vicreg",
    "helpers>GradedContrastiveLoss": "helpers.studies.contrastive_4_vs_9",
}
