// attention.cu
#include "common.cuh"
