// layer_norm.cu
#include "common.cuh"
