// dropout.cu
#include "common.cuh"
