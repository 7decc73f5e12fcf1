// reduce.cu
#include "common.cuh"
