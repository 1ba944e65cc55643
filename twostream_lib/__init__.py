"""twostream_lib: the library behind the executable book on two-stream ConvNets
(Simonyan & Zisserman, "Two-Stream Convolutional Networks for Action Recognition in Videos", NIPS 2014).

One module per concept of the paper: :mod:`video`, :mod:`splits`, :mod:`lab`, :mod:`flow`, :mod:`prepare`,
:mod:`data`, :mod:`models`, :mod:`config`, :mod:`train`, :mod:`pretrain`, :mod:`evaluate`, :mod:`fusion`,
:mod:`metrics`, :mod:`download` (the real datasets), :mod:`viz`, :mod:`cli`.
"""
__version__ = "0.1.0"
