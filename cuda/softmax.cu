// softmax.cu
#include "common.cuh"
